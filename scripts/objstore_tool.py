#!/usr/bin/env python3
"""Seed and read object stores with clients independent of Stratus.

The object-storage integration tests (tests/object_storage.rs) upload their
sample data and read back what Stratus wrote with this tool, so that neither
side of a check goes through Stratus' own object_store code:

  Azure Blob (Azurite): azure-storage-blob
    azure-create-container CONTAINER
    azure-upload DIR CONTAINER PREFIX      every file below DIR as PREFIX/relative-path
    azure-download CONTAINER PREFIX DIR    every blob below PREFIX/ into DIR/relative-path
    azure-list CONTAINER PREFIX            JSON list of {"name", "size", "modified"}
    azure-put CONTAINER KEY FILE           one blob
  S3 (moto): boto3
    s3-create-bucket BUCKET
    s3-upload DIR BUCKET PREFIX
    s3-download BUCKET PREFIX DIR
    s3-list BUCKET PREFIX
    s3-put BUCKET KEY FILE
  pyarrow-s3-count ENDPOINT BUCKET PREFIX  pyarrow.fs.S3FileSystem + pyarrow.dataset
                                           (hive): {"rows": N, "columns": [...]}

Connection settings come from the options before the subcommand, else from
the environment: Azure --endpoint/AZURE_STORAGE_ENDPOINT (e.g.
http://127.0.0.1:PORT/devstoreaccount1), --account/AZURE_STORAGE_ACCOUNT_NAME,
--key/AZURE_STORAGE_ACCOUNT_KEY; S3 --endpoint/AWS_ENDPOINT_URL,
--access-key/AWS_ACCESS_KEY_ID, --secret-key/AWS_SECRET_ACCESS_KEY,
--region/AWS_REGION.
"""

import argparse
import json
import os
import sys
from pathlib import Path


def files_below(directory):
    root = Path(directory)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.relative_to(root).as_posix()


def join_key(prefix, rel):
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


def list_prefix(prefix):
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


# --- Azure -------------------------------------------------------------------


def azure_service(args):
    from azure.storage.blob import BlobServiceClient

    endpoint = args.endpoint or os.environ.get("AZURE_STORAGE_ENDPOINT")
    account = args.account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    key = args.key or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
    if not (endpoint and account and key):
        sys.exit("azure: need --endpoint, --account and --key (or the AZURE_STORAGE_* variables)")
    return BlobServiceClient(
        account_url=endpoint,
        credential={"account_name": account, "account_key": key},
    )


def azure_create_container(args):
    from azure.core.exceptions import ResourceExistsError

    try:
        azure_service(args).create_container(args.container)
    except ResourceExistsError:
        pass


def azure_upload(args):
    container = azure_service(args).get_container_client(args.container)
    count = 0
    for path, rel in files_below(args.dir):
        with open(path, "rb") as data:
            container.upload_blob(join_key(args.prefix, rel), data, overwrite=True)
        count += 1
    print(json.dumps({"uploaded": count}))


def azure_put(args):
    container = azure_service(args).get_container_client(args.container)
    with open(args.file, "rb") as data:
        container.upload_blob(args.key_name, data, overwrite=True)


def azure_blobs(args):
    container = azure_service(args).get_container_client(args.container)
    return container, list(container.list_blobs(name_starts_with=list_prefix(args.prefix)))


def azure_list(args):
    _, blobs = azure_blobs(args)
    print(json.dumps([
        {"name": b.name, "size": b.size, "modified": b.last_modified.isoformat()} for b in blobs
    ]))


def azure_download(args):
    container, blobs = azure_blobs(args)
    start = len(list_prefix(args.prefix))
    for blob in blobs:
        target = Path(args.dir) / blob.name[start:]
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            container.download_blob(blob.name).readinto(out)
    print(json.dumps({"downloaded": len(blobs)}))


# --- S3 ----------------------------------------------------------------------


def s3_settings(args):
    endpoint = args.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    access = args.access_key or os.environ.get("AWS_ACCESS_KEY_ID", "testing")
    secret = args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")
    region = args.region or os.environ.get("AWS_REGION", "us-east-1")
    if not endpoint:
        sys.exit("s3: need --endpoint (or AWS_ENDPOINT_URL)")
    return endpoint, access, secret, region


def s3_client(args):
    import boto3

    endpoint, access, secret, region = s3_settings(args)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=region,
    )


def s3_create_bucket(args):
    client = s3_client(args)
    try:
        client.create_bucket(Bucket=args.bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def s3_upload(args):
    client = s3_client(args)
    count = 0
    for path, rel in files_below(args.dir):
        client.upload_file(str(path), args.bucket, join_key(args.prefix, rel))
        count += 1
    print(json.dumps({"uploaded": count}))


def s3_put(args):
    s3_client(args).upload_file(args.file, args.bucket, args.key_name)


def s3_objects(args):
    client = s3_client(args)
    objects = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=args.bucket, Prefix=list_prefix(args.prefix)
    )
    for page in pages:
        objects.extend(page.get("Contents", []))
    return client, objects


def s3_list(args):
    _, objects = s3_objects(args)
    print(json.dumps([
        {"name": o["Key"], "size": o["Size"], "modified": o["LastModified"].isoformat()}
        for o in objects
    ]))


def s3_download(args):
    client, objects = s3_objects(args)
    start = len(list_prefix(args.prefix))
    for obj in objects:
        target = Path(args.dir) / obj["Key"][start:]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(args.bucket, obj["Key"], str(target))
    print(json.dumps({"downloaded": len(objects)}))


def pyarrow_s3_count(args):
    import pyarrow.dataset as ds
    from pyarrow import fs

    args.endpoint = args.endpoint_url
    endpoint, access, secret, region = s3_settings(args)
    scheme = "https" if endpoint.startswith("https://") else "http"
    host = endpoint.split("://", 1)[-1].rstrip("/")
    s3 = fs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        access_key=access,
        secret_key=secret,
        region=region,
    )
    path = f"{args.bucket}/{args.prefix.strip('/')}".rstrip("/")
    # Files named _* or .* (such as _SUCCESS) are ignored, as Spark does.
    dataset = ds.dataset(path, filesystem=s3, format="parquet", partitioning="hive")
    print(json.dumps({"rows": dataset.count_rows(), "columns": dataset.schema.names}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint")
    parser.add_argument("--account")
    parser.add_argument("--key")
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--region")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, *params):
        p = sub.add_parser(name)
        for param in params:
            p.add_argument(param)
        p.set_defaults(func=func)

    command("azure-create-container", azure_create_container, "container")
    command("azure-upload", azure_upload, "dir", "container", "prefix")
    command("azure-download", azure_download, "container", "prefix", "dir")
    command("azure-list", azure_list, "container", "prefix")
    command("azure-put", azure_put, "container", "key_name", "file")
    command("s3-create-bucket", s3_create_bucket, "bucket")
    command("s3-upload", s3_upload, "dir", "bucket", "prefix")
    command("s3-download", s3_download, "bucket", "prefix", "dir")
    command("s3-list", s3_list, "bucket", "prefix")
    command("s3-put", s3_put, "bucket", "key_name", "file")
    command("pyarrow-s3-count", pyarrow_s3_count, "endpoint_url", "bucket", "prefix")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
