"""Run the notifier: `python -m services.notifier`."""

import asyncio

from services.notifier.app import create_app

asyncio.run(create_app().run())
