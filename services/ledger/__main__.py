"""Run the ledger service: `python -m services.ledger`."""

import asyncio

from services.ledger.app import create_app

asyncio.run(create_app().run())
