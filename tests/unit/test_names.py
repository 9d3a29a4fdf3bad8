"""The name patterns accept ASCII only where Azure reads ASCII."""

from __future__ import annotations

import pytest

from azproxy.auth.credentials import parse_passthrough
from azproxy.errors import ConfigError, InvalidCredentials
from azproxy.settings.config import Config
from azproxy.settings.patterns import API_VERSION_RE
from azproxy.settings.server_side import parse_endpoints

KEY = "0123456789abcdef0123456789abcdef"
# 2024-10-21 written with digits that `\d` matches but Azure does not read.
ARABIC_INDIC = "\u0662\u0660\u0662\u0664-\u0661\u0660-\u0662\u0661"
FULLWIDTH = "\uff12\uff10\uff12\uff14-10-21"


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", "v1"])
def test_ascii_api_versions_pass(version: str) -> None:
    assert API_VERSION_RE.fullmatch(version)
    assert parse_passthrough(f"res:dep:{KEY}:{version}").api_version == version


@pytest.mark.parametrize("version", [ARABIC_INDIC, FULLWIDTH])
def test_an_api_version_in_other_digits_is_refused(version: str) -> None:
    assert API_VERSION_RE.fullmatch(version) is None
    with pytest.raises(InvalidCredentials) as caught:
        parse_passthrough(f"res:dep:{KEY}:{version}")
    assert "API version (part 4)" in caught.value.message
    with pytest.raises(ConfigError) as config_error:
        Config.load(None, {"AZPROXY_API_VERSION": version})
    assert "is not an Azure OpenAI api-version" in str(config_error.value)
    with pytest.raises(ConfigError):
        Config(api_version=version)
    endpoint = {"url": "https://e.example", "api_key": "k", "api_version": version}
    with pytest.raises(ConfigError) as problems:
        parse_endpoints({"e": endpoint}, {})
    assert "endpoints.e.api_version" in str(problems.value)
