"""Training data: official jsonl splits and webdataset shards, bucketed by aspect ratio, resumable."""

from bitwise_ar.train.data.loader import Batch, BucketedLoader, choose_caption, load_image, target_size
from bitwise_ar.train.data.records import (
    Record,
    RecordTable,
    SplitFile,
    load_records,
    parse_split_name,
    read_split_folder,
    read_webdataset,
)

__all__ = [
    "Batch",
    "BucketedLoader",
    "Record",
    "RecordTable",
    "SplitFile",
    "choose_caption",
    "load_image",
    "load_records",
    "parse_split_name",
    "read_split_folder",
    "read_webdataset",
    "target_size",
]
