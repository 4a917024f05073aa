import asyncio

from services.transform.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
