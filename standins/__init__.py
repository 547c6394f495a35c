"""Stand-ins for the outside services this machine cannot reach: Kaggle's API
(``standins.kaggle``) and the competition data page's signed part links (``standins.links``).

Each runs on 127.0.0.1 and behaves as the real service does, citing the public evidence for
what it lists, answers and refuses. The tests and the benchmarks both use them; neither
imports the other.
"""
