import asyncio

from services.loader.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
