#!/usr/bin/env python3
"""A TCP proxy for the soak test: forwards LISTEN_PORT to TARGET_PORT on
127.0.0.1. SIGUSR1 cuts (closes every connection, refuses new ones until
restored); SIGUSR2 restores. Standard library only."""
import asyncio
import signal
import sys

listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
state = {"up": True, "writers": set()}


async def pump(reader, writer):
    try:
        while state["up"]:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    if not state["up"]:
        client_writer.close()
        return
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    pair = (client_writer, server_writer)
    state["writers"].add(pair)
    await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
    state["writers"].discard(pair)


def cut():
    state["up"] = False
    for pair in list(state["writers"]):
        for writer in pair:
            writer.close()
    print("proxy: cut", flush=True)


def restore():
    state["up"] = True
    print("proxy: restored", flush=True)


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
