'use strict';
/*
 * node-floor: the floor with Node's `net` module: what any Node SMTP responder costs,
 * so that smtp-server's own work shows as the difference to bench/node/smtp_server.js.
 *
 * Run as `node bench/floor/node_floor.js --port 0`; prints `READY <port>` once bound and
 * serves until SIGTERM or SIGINT. The same answers as bench/floor/_answers.py: a command
 * line is anything up to CRLF, its first four octets pick the reply (DATA: 354, QUIT: 221,
 * else 250); after 354, everything up to CRLF.CRLF is the body, then 250. No parsing, no
 * checks. A floor, not a server.
 */
const net = require('node:net');

const GREETING = '220 floor ESMTP\r\n';
const OK = '250 ok\r\n';
const GO_AHEAD = '354 go ahead\r\n';
const BYE = '221 bye\r\n';
const END_OF_DATA = Buffer.from('\r\n.\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');

function handle(socket) {
    socket.setNoDelay(true);
    let rest = null;
    let inData = false;
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk) => {
        const buf = rest ? Buffer.concat([rest, chunk]) : chunk;
        let pos = 0;
        let replies = '';
        rest = null;
        for (;;) {
            if (inData) {
                const end = buf.indexOf(END_OF_DATA, pos);
                if (end < 0) {
                    // At most four octets of a CRLF.CRLF split over two reads.
                    rest = buf.subarray(Math.max(pos, buf.length - 4));
                    break;
                }
                pos = end + 5;
                replies += OK;
                inData = false;
                continue;
            }
            const end = buf.indexOf(CRLF, pos);
            if (end < 0) {
                if (pos < buf.length) {
                    rest = buf.subarray(pos);
                }
                break;
            }
            const verb = buf.toString('latin1', pos, Math.min(pos + 4, end)).toUpperCase();
            if (verb === 'DATA') {
                replies += GO_AHEAD;
                inData = true;
                pos = end; // keep the CRLF: the body may be empty
            } else if (verb === 'QUIT') {
                socket.end(replies + BYE);
                return;
            } else {
                replies += OK;
                pos = end + 2;
            }
        }
        if (replies) {
            socket.write(replies);
        }
    });
    socket.write(GREETING);
}

function main() {
    const argv = process.argv.slice(2);
    let host = '127.0.0.1';
    let port = 0;
    for (let i = 0; i < argv.length; i += 2) {
        if (argv[i] === '--host') {
            host = argv[i + 1];
        } else if (argv[i] === '--port') {
            port = Number(argv[i + 1]);
        } else {
            process.stderr.write(`node_floor.js: bad argument ${JSON.stringify(argv[i])}\n`);
            process.exit(2);
        }
    }
    const server = net.createServer(handle);
    server.listen(port, host, () => {
        process.stdout.write(`READY ${server.address().port}\n`);
    });
    const stop = () => process.exit(0);
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
