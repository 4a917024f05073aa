import asyncio

from services.validator.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
