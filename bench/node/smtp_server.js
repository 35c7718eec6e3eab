'use strict';
/*
 * Nodemailer's smtp-server side of the benchmark: a discard onData on the public API.
 *
 * Run as `node bench/node/smtp_server.js --port 0`; once the socket is bound it prints
 * `READY <port>` on stdout and then serves until killed (SIGTERM or SIGINT).
 *
 * The flags and defaults mirror bench/trio_server.py and bench/aiosmtpd_server.py so that
 * the three differ only in the library under test: same host, fixed hostname, 32 MiB size
 * limit, STARTTLS offered but not required when a certificate is given, no authentication,
 * no reverse DNS lookup (neither of the other two makes one), no logging.
 *
 * Kept at smtp-server's defaults, and documented in bench/README.md: it waits 100 ms before
 * every greeting (to catch clients that talk too soon; there is no option to turn it off),
 * so new-connection loads measure that timer more than the server. Kept-alive loads pay
 * it once per session.
 */
const fs = require('node:fs');
const { SMTPServer } = require('smtp-server');

// Equal to max_message_size in bench/trio_server.py and data_size_limit in aiosmtpd's.
const DEFAULT_MAX_MESSAGE_SIZE = 33554432;

function parseArgs(argv) {
    const args = {
        host: '127.0.0.1',
        port: 0,
        hostname: 'localhost',
        maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE,
        tlsCert: null,
        tlsKey: null
    };
    const flags = {
        '--host': (v) => (args.host = v),
        '--port': (v) => (args.port = Number(v)),
        '--hostname': (v) => (args.hostname = v),
        '--max-message-size': (v) => (args.maxMessageSize = Number(v)),
        '--tls-cert': (v) => (args.tlsCert = v),
        '--tls-key': (v) => (args.tlsKey = v),
        // Accepted for symmetry with trio_server.py; smtp-server's maxClients stays unlimited.
        '--max-connections': () => {}
    };
    for (let i = 0; i < argv.length; i += 2) {
        const set = flags[argv[i]];
        if (!set || i + 1 >= argv.length) {
            process.stderr.write(`smtp_server.js: bad argument ${JSON.stringify(argv[i])}\n`);
            process.exit(2);
        }
        set(argv[i + 1]);
    }
    if (Boolean(args.tlsCert) !== Boolean(args.tlsKey)) {
        process.stderr.write('smtp_server.js: --tls-cert and --tls-key go together\n');
        process.exit(2);
    }
    return args;
}

function main() {
    const args = parseArgs(process.argv.slice(2));
    const options = {
        name: args.hostname,
        banner: 'ESMTP',
        size: args.maxMessageSize,
        rejectOversized: true,
        authOptional: true,
        disabledCommands: ['AUTH'],
        disableReverseLookup: true,
        logger: false,
        // Read the body, count it, reply 250: what the other two discard handlers do.
        onData(stream, session, callback) {
            let octets = 0;
            stream.on('data', (chunk) => {
                octets += chunk.length;
            });
            stream.on('end', () => callback(null, 'OK'));
        }
    };
    if (args.tlsCert) {
        options.key = fs.readFileSync(args.tlsKey);
        options.cert = fs.readFileSync(args.tlsCert);
    } else {
        options.hideSTARTTLS = true;
    }
    const server = new SMTPServer(options);
    server.on('error', (err) => process.stderr.write(`[ERROR] - ${err.stack || err}\n`));
    server.listen(args.port, args.host, () => {
        process.stdout.write(`READY ${server.server.address().port}\n`);
    });
    // server.close() would wait for the clients to leave; the bench wants it gone now.
    const stop = () => process.exit(0);
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
