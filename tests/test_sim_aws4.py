"""AWS4-HMAC-SHA256 signing against AWS's published SigV4 test-suite vectors, and the header parser."""

from __future__ import annotations

import pytest

from jimeng_batch.protocol import aws4

SUITE = aws4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
HOST = {"host": "example.amazonaws.com"}
STAMP = "20150830T123600Z"


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        pytest.param("GET", [], "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", id="get-vanilla"),
        pytest.param("GET", [("Param2", "value2"), ("Param1", "value1")],
                     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
                     id="get-vanilla-query-order-key-case"),
        pytest.param("POST", [], "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", id="post-vanilla"),
    ],
)
def test_aws_test_suite_vectors(method: str, params: list[tuple[str, str]], expected: str) -> None:
    signed = aws4.sign(method=method, path="/", params=params, headers=HOST, body=b"", credentials=SUITE,
                       region="us-east-1", service="service", timestamp=STAMP, encode_query=True,
                       extra_signed_headers=["host"])
    assert signed["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={expected}"
    )
    assert signed["x-amz-date"] == STAMP
    assert "x-amz-security-token" not in signed


def test_get_vanilla_intermediate_values() -> None:
    """The canonical request and string to sign of get-vanilla, as the suite publishes them."""
    canonical = aws4.canonical_request("GET", "/", "", {**HOST, "x-amz-date": STAMP}, ["host", "x-amz-date"],
                                       aws4.EMPTY_SHA256)
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert aws4.string_to_sign(STAMP, "20150830/us-east-1/service/aws4_request", canonical) == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )


def test_raw_and_encoded_queries_differ_only_for_reserved_characters() -> None:
    simple = [("b", "2"), ("a", "1")]
    assert aws4.canonical_query(simple, encode=False) == aws4.canonical_query(simple, encode=True) == "a=1&b=2"
    spaced = [("k", "a b/c")]
    assert aws4.canonical_query(spaced, encode=True) == "k=a%20b%2Fc"
    assert aws4.canonical_query(spaced, encode=False) == "k=a b/c"


def test_session_token_and_body_hash_are_signed() -> None:
    creds = aws4.Credentials("AK", "SK", "TOKEN")
    signed = aws4.sign(method="POST", path="/", params=[("Action", "CommitImageUpload")], headers={}, body=b"{}",
                       credentials=creds, region="cn-north-1", service="imagex", timestamp=STAMP,
                       sign_content_sha256=True)
    assert signed["x-amz-security-token"] == "TOKEN"
    assert signed["x-amz-content-sha256"] == aws4.payload_hash(b"{}")
    parsed = aws4.parse_authorization(signed["authorization"])
    assert parsed.signed_headers == ("x-amz-content-sha256", "x-amz-date", "x-amz-security-token")
    assert parsed.scope == "20150830/cn-north-1/imagex/aws4_request"
    assert "SK" not in repr(creds) and "TOKEN" not in repr(creds)


def test_amz_date() -> None:
    assert aws4.amz_date(1440938160) == STAMP


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=x, Signature=y", id="algorithm"),
        pytest.param("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=x", id="no-signature"),
        pytest.param("AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=x, Signature=y", id="short-scope"),
        pytest.param("AWS4-HMAC-SHA256 Credential=a/b/c/d/other, SignedHeaders=x, Signature=y", id="terminator"),
        pytest.param("AWS4-HMAC-SHA256 garbage", id="malformed"),
    ],
)
def test_parse_authorization_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        aws4.parse_authorization(header)
