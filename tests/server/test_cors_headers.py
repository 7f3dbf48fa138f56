"""CORS preflights for the SDKs that run in a browser: the OpenAI and Anthropic clients send
their own headers, which a preflight must allow or the browser never sends the request."""

from __future__ import annotations

import httpx
import pytest

from tests.server.test_middleware import _client

ORIGIN = "http://localhost:5173"


async def preflight(client: httpx.AsyncClient, path: str, headers: str) -> httpx.Response:
    return await client.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def allowed(response: httpx.Response) -> set[str]:
    value = response.headers["access-control-allow-headers"]
    return {name.strip().lower() for name in value.split(",")}


@pytest.mark.parametrize(
    "headers",
    [
        # what @anthropic-ai/sdk sends from a browser (dangerouslyAllowBrowser)
        "anthropic-dangerous-direct-browser-access,anthropic-version,content-type,"
        "x-api-key,x-stainless-arch,x-stainless-lang,x-stainless-os,"
        "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
        "x-stainless-runtime-version,x-stainless-timeout",
        "anthropic-beta,anthropic-version,x-api-key",
        # what the openai package sends from a browser
        "authorization,content-type,openai-beta,x-stainless-arch,x-stainless-helper-method,"
        "x-stainless-poll-helper,x-stainless-custom-poll-interval,x-stainless-async",
    ],
)
async def test_sdk_preflights_are_allowed(headers: str) -> None:
    response = await preflight(_client(), "/v1/messages", headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert {h.strip() for h in headers.split(",")} <= allowed(response)


async def test_a_new_stainless_header_is_allowed_but_not_any_header() -> None:
    response = await preflight(_client(), "/v1/messages", "x-stainless-brand-new, x-secret")
    assert "x-stainless-brand-new" in allowed(response)
    assert "x-secret" not in allowed(response)


async def test_preflight_needs_no_api_key_and_the_request_then_uses_x_api_key() -> None:
    client = _client(api_key="k3y")
    response = await preflight(client, "/v1/messages", "x-api-key,anthropic-version")
    assert response.status_code == 204
    ok = await client.post("/v1/messages", headers={"Origin": ORIGIN, "x-api-key": "k3y"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    refused = await client.post("/v1/messages", headers={"Origin": ORIGIN, "x-api-key": "no"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read why
