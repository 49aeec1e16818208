#!/usr/bin/env node
// The SMSC peer's own ceiling with receipts, for bench/smpp.sh: no gateway in
// between, a bare node-smpp client binds BINDS transceivers to the peer
// (peers/smsc/smsc.js) and keeps WINDOW submit_sm in flight on each, the
// same binds and window otpgate gets, until COUNT were answered; it answers
// every deliver_sm and stops at the COUNT-th receipt.
//
// Usage: node bench/smsc-ceiling.js PORT COUNT [BINDS] [WINDOW]
// Prints one JSON line: {"count", "receipts", "seconds", "rate"}, the rate being
// COUNT / (last receipt - first submit_sm), the same span otpgate's stage
// measures from its own database.
'use strict';

const path = require('path');
const smpp = require(path.join(__dirname, '..', 'peers', 'smsc', 'node_modules', 'smpp'));

const [port, count, binds = 2, window = 50] = process.argv.slice(2).map(Number);
if (!port || !count) {
	console.error('usage: smsc-ceiling.js PORT COUNT [BINDS] [WINDOW]');
	process.exit(2);
}

let submitted = 0;
let answered = 0;
let receipts = 0;
let started = 0;
const deadline = setTimeout(() => finish('timed out after 300 s'), 300_000);

function finish(error) {
	const seconds = (Date.now() - started) / 1000;
	const line = { count, receipts, answered, seconds, rate: Math.round(receipts / seconds) };
	if (error) {
		line.error = error;
	}
	console.log(JSON.stringify(line));
	clearTimeout(deadline);
	process.exit(error ? 1 : 0);
}

function submitNext(session) {
	if (submitted >= count) {
		return;
	}
	submitted++;
	session.submit_sm(
		{
			source_addr: 'bench',
			destination_addr: '9779851023212',
			registered_delivery: 1,
			short_message: 'Your code is 123456',
		},
		(pdu) => {
			if (pdu.command_status !== 0) {
				finish(`submit_sm answered with status ${pdu.command_status}`);
			}
			answered++;
			submitNext(session);
		},
	);
}

let bound = 0;
const sessions = [];
for (let b = 0; b < binds; b++) {
	const session = smpp.connect({ url: `smpp://127.0.0.1:${port}`, auto_enquire_link_period: 0 });
	sessions.push(session);
	session.on('error', (e) => finish(`session error: ${e.message}`));
	session.on('deliver_sm', (pdu) => {
		session.send(pdu.response());
		receipts++;
		if (receipts === count) {
			finish();
		}
	});
	session.bind_transceiver({ system_id: 'otpgate', password: 'secret' }, (pdu) => {
		if (pdu.command_status !== 0) {
			finish(`bind answered with status ${pdu.command_status}`);
		}
		bound++;
		if (bound === binds) {
			started = Date.now();
			for (const s of sessions) {
				for (let i = 0; i < window; i++) {
					submitNext(s);
				}
			}
		}
	});
}
