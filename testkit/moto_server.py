"""The moto server as chatctl's tests run it, with the fixes they need.

moto emulates AWS well enough for chatctl, with gaps. Each gap is closed here,
before the server starts, so that product code stays right for real AWS:

- DynamoDB: moto applies a TransactWriteItems by copying the table and
  restoring the copy when a condition fails. Run concurrently, one request's
  restore can undo another's writes. Real DynamoDB transactions are atomic and
  isolated, so every DynamoDB operation is serialised here. Pinned by
  chat-core's test the_connection_limit_holds_under_concurrent_connects, which
  fails on a plain moto server (over-admits) and passes with this launcher.

Usage: python moto_server.py [moto_server options, e.g. -H 127.0.0.1 -p 5000]
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_dynamodb_lock = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _dynamodb_lock:
            return method(*args, **kwargs)

    return wrapper


for _name, _value in list(vars(DynamoDBBackend).items()):
    if callable(_value) and not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialised(_value))


if __name__ == "__main__":
    main(sys.argv[1:])
