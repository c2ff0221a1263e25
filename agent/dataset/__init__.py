"""The study side: ``optin dataset`` turns checked bundles into a dataset (docs/dataset.md).

Never imported by the recorder (tests/unit/test_no_network.py): its dependencies (boto3, pyarrow,
ray, ...) are the ``study`` extra, and only the collector's commands load it.
"""
