#!/usr/bin/env python3
"""Terminate TLS on 127.0.0.1:LISTEN and pass the bytes on to 127.0.0.1:TARGET.

    tls-proxy.py LISTEN TARGET CERT KEY [PIDFILE]

Puts moto (the SQS/SNS emulator) behind TLS for the TLS tests: moto's own
TLS (werkzeug's) stalls on kept-alive connections, whose next request sits
decrypted in the TLS buffer while the server waits on the socket.
"""
import asyncio
import os
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def serve(listen, target, context):
    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=context, ssl_handshake_timeout=5)
    async with server:
        await server.serve_forever()


def main():
    listen, target, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if len(sys.argv) > 5:
        with open(sys.argv[5], "w") as f:
            f.write(f"{os.getpid()}\n")
    asyncio.run(serve(listen, target, context))


if __name__ == "__main__":
    main()
