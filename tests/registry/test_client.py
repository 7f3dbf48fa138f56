"""The registry client follows a token realm only on the registry's own host."""

from __future__ import annotations

import pytest

from corral.registry import RegistryClient, RegistryError
from corral.store import Name


@pytest.mark.parametrize(
    ("name", "insecure", "realm"),
    [
        ("registry.ollama.ai/library/m:1", False, "https://registry.ollama.ai/v2/token"),
        ("Registry.Ollama.AI/library/m:1", False, "https://registry.ollama.ai/token"),
        ("127.0.0.1:5000/a/m:1", True, "http://127.0.0.1:5000/token?x=1"),
        ("127.0.0.1:5000/a/m:1", False, "https://user:pw@127.0.0.1:5000/token"),
    ],
)
async def test_a_realm_on_the_registry_host_is_followed(
    name: str, insecure: bool, realm: str
) -> None:
    async with RegistryClient(Name.parse(name), insecure=insecure) as client:
        client._check_realm(realm)


@pytest.mark.parametrize(
    ("name", "insecure", "realm", "message"),
    [
        (
            "registry.ollama.ai/library/m:1",
            False,
            "https://auth.example.com/token",
            'realm host "auth.example.com" does not match original host "registry.ollama.ai"',
        ),
        (
            "127.0.0.1:5000/a/m:1",
            True,
            "http://127.0.0.1:5001/token",
            'realm host "127.0.0.1:5001" does not match original host "127.0.0.1:5000"',
        ),
        (
            "127.0.0.1:5000/a/m:1",
            True,
            "http://169.254.169.254/latest/meta-data/",
            'realm host "169.254.169.254" does not match original host "127.0.0.1:5000"',
        ),
        (
            "127.0.0.1:5000/a/m:1",
            True,
            "http://127.0.0.1:5000@evil.example/token",
            'realm host "evil.example" does not match original host "127.0.0.1:5000"',
        ),
        ("127.0.0.1:5000/a/m:1", False, "http://127.0.0.1:5000/token", "unsupported token realm"),
        ("127.0.0.1:5000/a/m:1", True, "file:///etc/passwd", "unsupported token realm"),
        ("127.0.0.1:5000/a/m:1", True, "", "unsupported token realm"),
    ],
)
async def test_any_other_realm_is_refused(
    name: str, insecure: bool, realm: str, message: str
) -> None:
    async with RegistryClient(Name.parse(name), insecure=insecure) as client:
        with pytest.raises(RegistryError) as info:
            client._check_realm(realm)
    assert message in info.value.message
