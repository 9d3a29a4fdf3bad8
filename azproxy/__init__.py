"""azproxy: a small, fast streaming proxy from the OpenAI API to Azure OpenAI."""

__version__ = "0.1.0"

from azproxy.app import create_app
from azproxy.settings.config import Config

__all__ = ["Config", "__version__", "create_app"]
