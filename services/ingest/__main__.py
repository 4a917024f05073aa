import asyncio

from services.ingest.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
