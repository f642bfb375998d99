#!/usr/bin/env python3
"""RAG-style retrieval with GloVe word vectors (no model download).

The "documents" are the 1,000 words of glove50's query file whose words are
known (glove50_query_words.txt), stored in a cosine collection under their
row numbers (the server keeps vectors and ids; the text stays here, looked up
by id). A question is embedded as the mean of its words' vectors (a
bag-of-words encoder standing in for a real model), the nearest documents are
retrieved, the question's own words left out with an allow-list filter, and
the prompt an LLM would get is printed.
"""

import os

import numpy as np

from _common import datasets_dir, parser, read_fvecs, shoal

QUESTIONS = [
    "garlic oven teaspoon",
    "fossil geological",
    "screenplay madonna",
    "diagnosis healing",
]


def main():
    p = parser(__doc__)
    p.add_argument("--collection", default="py_rag")
    p.add_argument("-k", type=int, default=6)
    p.add_argument("questions", nargs="*", default=QUESTIONS,
                   help="questions made of words of glove50_query_words.txt")
    args = p.parse_args()

    folder = os.path.join(args.datasets or datasets_dir() or "", "glove50")
    words_path = os.path.join(folder, "glove50_query_words.txt")
    if not os.path.exists(words_path):
        raise SystemExit("glove50 not found in %s (set --datasets or SHOAL_DATASETS)" % folder)
    with open(words_path, encoding="utf-8") as f:
        words = [w.strip() for w in f]
    vectors = read_fvecs(os.path.join(folder, "glove50_query.fvecs"))
    index = {w: i for i, w in enumerate(words)}

    with shoal.Client(args.endpoint, timeout=args.timeout) as c:
        c.create_collection(args.collection, vectors.shape[1], metric="cosine", nlist=8)
        try:
            c.train(args.collection, vectors)
            c.insert(args.collection, vectors, np.arange(len(words)))
            print("knowledge base: %d words in %r (cosine)\n" % (len(words), args.collection))
            for question in args.questions:
                known = [w for w in question.lower().split() if w in index]
                if not known:
                    print("%r: none of its words is in the vocabulary\n" % question)
                    continue
                query = np.mean([vectors[index[w]] for w in known], axis=0)
                own = {index[w] for w in known}
                allowed = [i for i in range(len(words)) if i not in own]
                D, I = c.search(args.collection, query, args.k, filter=allowed)
                context = ["%s (%.2f)" % (words[i], 1 - d) for d, i in zip(D[0], I[0]) if i >= 0]
                print("question: %s" % question)
                print("retrieved: %s" % ", ".join(context))
                print("prompt:\n  Answer using this context: %s.\n  Question: %s\n"
                      % (", ".join(words[i] for i in I[0] if i >= 0), question))
        finally:
            if not args.keep:
                c.drop(args.collection)


if __name__ == "__main__":
    main()
