"""Mint a chat connection token on your app server (chatctl's `auth = "token"`).

Your server signs a user in its own way, then gives the browser a token for
the chat. It reads the stack's secret with its own IAM role, which needs only

    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
     "Resource": "arn:aws:secretsmanager:REGION:ACCOUNT:secret:chatctl/STACK/token-??????"}

and signs an HS256 JWT the chat's authorizer accepts:

    header  {"alg": "HS256", "typ": "JWT", "kid": <the secret's VersionId>}
    claims  {"sub": <user>, "iat": <now>, "exp": <now + ttl>}

`sub` is the chat user: 1 to 64 of A-Z a-z 0-9 . _ @ -. `exp` at most 30
days ahead. `kid` names the secret's version, so that tokens stay valid across
`chatctl token rotate` until they expire. Read the secret once every few
minutes, not for every token (Secrets Manager bills each call).

Standard library and boto3 only. Usage:

    python mint_token.py --stack chat --user alice [--ttl 3600] [--region eu-west-1]
"""

import argparse
import base64
import hashlib
import hmac
import json
import re
import time

import boto3

USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MAX_TTL = 30 * 24 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret: str, version: str, user: str, ttl: int) -> str:
    """An HS256 JWT for `user`, signed with one version of the stack's secret."""
    if not USER.match(user):
        raise ValueError(f"invalid user name {user!r}")
    if not 1 <= ttl <= MAX_TTL:
        raise ValueError("ttl must be between 1 s and 30 days")
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": version}
    claims = {"sub": user, "iat": now, "exp": now + ttl}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="chat")
    parser.add_argument("--user", required=True)
    parser.add_argument("--ttl", type=int, default=3600, help="seconds (at most 30 days)")
    parser.add_argument("--region")
    args = parser.parse_args()
    secrets = boto3.client("secretsmanager", region_name=args.region)
    current = secrets.get_secret_value(SecretId=f"chatctl/{args.stack}/token")
    print(mint(current["SecretString"], current["VersionId"], args.user, args.ttl))


if __name__ == "__main__":
    main()
