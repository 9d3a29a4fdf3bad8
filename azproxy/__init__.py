"""azproxy: a small, fast streaming proxy from the OpenAI API to Azure OpenAI."""

from azproxy.app import create_app
from azproxy.settings.config import Config
from azproxy.version import __version__

__all__ = ["Config", "__version__", "create_app"]
