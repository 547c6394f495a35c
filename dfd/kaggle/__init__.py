"""DFDC as it is distributed: Kaggle's API files, and the signed links of the 50 parts.

    dfd download --links dfdc-links.txt --out gs://bucket/dfdc-raw [--parts 0-4]
    dfd download --kaggle-files --out data/dfdc-sample

Kaggle's API serves the labelled sample, the test videos and the submission template, not the
training parts (the data page: "not available directly on Kaggle"; asking the API for one
answers 404, kaggle-cli issue #413); those come from the data page's signed links
(``links.py``). Both paths share the retries, checks, receipts, progress and redaction here.

From the API, each file is listed with its size, downloaded by ``KaggleApi.download_file``
(which resumes a partial file with an HTTP Range request), retried with exponential backoff,
checked against the listed size and the checksum the storage server advertises
(``x-goog-hash`` / ``Content-MD5``), and only then committed under its final name (see
``dfd.storage``). A receipt under ``<dest>/_verified/`` records what was checked, so later
runs skip the file without reading it.
Partial downloads wait in ``<dest>/_incoming/`` (local destinations) or in a local scratch
folder (gs://, s3://); names starting with ``_`` are skipped by the pipeline's part listing.

Credentials come from where the kaggle client looks (KAGGLE_API_TOKEN, KAGGLE_USERNAME and
KAGGLE_KEY, ``kaggle.json``, ``~/.kaggle/access_token``, ``kaggle auth login``) and are never
printed, logged or written (``dfd.kaggle.credentials``).

For a Beam DoFn: build ``Competition`` once in ``setup()`` and call its ``fetch_part`` per
element, or call the module-level ``fetch_part`` (which authenticates and lists every call).

    credentials.py  where the credentials are; the authenticated kaggle client
    competition.py  listing, fetching one file, the batch and single-part entry points
    links.py        signed part links: parsing a links file, resumable verified downloads,
                    dfdc_train_all.zip unpacked into its parts
    checks.py       size and checksum verification, receipts
    retries.py      what to retry and how long to wait
    progress.py     tqdm bars per file and overall
    redact.py       credentials and signed URLs kept out of messages and logs
"""
from dfd.kaggle.checks import RECEIPTS, read_receipt
from dfd.kaggle.competition import (
                                    API_FILES,
                                    COMPETITION,
                                    INCOMING,
                                    Competition,
                                    CompetitionFile,
                                    FetchResult,
                                    download_files,
                                    download_parts,
                                    fetch_part,
                                    parts_not_served,
)
from dfd.kaggle.credentials import credential_source
from dfd.kaggle.errors import AccessDenied, FetchFailed, MissingCredentials
from dfd.kaggle.progress import Progress
from dfd.kaggle.retries import RetryPolicy

__all__ = ["API_FILES", "COMPETITION", "INCOMING", "RECEIPTS", "AccessDenied", "Competition",
           "CompetitionFile", "FetchFailed", "FetchResult", "MissingCredentials", "Progress",
           "RetryPolicy", "credential_source", "download_files", "download_parts", "fetch_part",
           "parts_not_served", "read_receipt"]
