"""Run the deployer service: `python -m services.deployer`."""

import asyncio

from services.deployer.app import create_app

asyncio.run(create_app().run())
