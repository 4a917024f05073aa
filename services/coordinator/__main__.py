import asyncio

from services.coordinator.app import app

if __name__ == "__main__":
    asyncio.run(app.run())
