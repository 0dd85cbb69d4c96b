"""Run the rollback service: `python -m services.rollback`."""

import asyncio

from services.rollback.app import create_app

asyncio.run(create_app().run())
