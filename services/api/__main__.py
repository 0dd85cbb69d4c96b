"""python -m services.api: serve the operator API on Settings().api_url's host and port (uvicorn)."""

from urllib.parse import urlsplit

import uvicorn

from services.api.app import create_app
from shared.platform.logging import configure_logging
from shared.platform.settings import Settings


def main() -> None:
    """Serve until SIGTERM."""
    settings = Settings()
    configure_logging("api")
    url = urlsplit(settings.api_url)
    uvicorn.run(create_app(settings), host=url.hostname or "127.0.0.1", port=url.port or 80,
                log_config=None, access_log=False, proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
