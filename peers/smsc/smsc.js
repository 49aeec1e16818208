#!/usr/bin/env node
// A scriptable SMPP 3.4 SMSC for otpgate's integration tests and benchmarks,
// built on node-smpp (`smpp.createServer`). It binds ESMEs, answers submit_sm
// with message ids, decodes what it receives the way a real SMSC would, sends
// delivery receipts, and can misbehave on demand (throttle, delay, go silent).
//
// Every event is one JSON line on stdout; see README.md for the flags and the
// event shapes. It listens on 127.0.0.1 only.
'use strict';

const fs = require('fs');
const smpp = require('smpp');

// ---------------------------------------------------------------- options --

const DEFAULTS = {
	port: 2775,
	'system-id': 'otpgate',
	password: 'secret',
	receipts: 'none', // none | delivered | undeliverable | mixed
	'receipt-delay-ms': 0,
	'receipt-form': 'both', // text | tlv | both
	'receipt-id-format': 'same', // same | hex | decimal: how the receipt spells the id
	'first-id': 0, // 0: a high id that differs per run; else the first message id
	'resp-id-pad': 0, // zero-pad submit_sm_resp ids to this many digits
	'receipt-id-pad': 0, // zero-pad receipt ids to this many digits
	'throttle-every': 0,
	'resp-delay-ms': 0,
	'no-resp': false,
	'no-delay': false, // TCP_NODELAY on the sessions' sockets (node leaves Nagle's algorithm on)
	'window-check': 0,
	'enquire-link-ms': 0,
	'mo-text': '',
	quiet: false,
	'stats-interval-ms': 0,
	record: '',
	commands: false, // read commands from stdin (see below)
};
const BOOLEAN = new Set(['no-resp', 'no-delay', 'quiet', 'commands']);
const RECEIPT_MODES = ['none', 'delivered', 'undeliverable', 'mixed'];

function parseOptions(argv, env) {
	const options = { ...DEFAULTS };
	// Environment first (SMSC_SYSTEM_ID=...), flags on top.
	for (const key of Object.keys(DEFAULTS)) {
		const envName = 'SMSC_' + key.toUpperCase().replace(/-/g, '_');
		if (env[envName] !== undefined) {
			options[key] = coerce(key, env[envName]);
		}
	}
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		if (!arg.startsWith('--')) {
			fail(`unexpected argument ${arg}`);
		}
		let [key, value] = arg.slice(2).split(/=(.*)/s, 2);
		if (arg === '--help' || arg === '-h') {
			usage();
		}
		if (!(key in DEFAULTS)) {
			fail(`unknown option --${key}`);
		}
		if (value === undefined) {
			value = BOOLEAN.has(key) ? 'true' : argv[++i];
			if (value === undefined) {
				fail(`--${key} needs a value`);
			}
		}
		options[key] = coerce(key, value);
	}
	const choices = {
		receipts: RECEIPT_MODES,
		'receipt-form': ['text', 'tlv', 'both'],
		'receipt-id-format': ['same', 'hex', 'decimal'],
	};
	for (const [key, allowed] of Object.entries(choices)) {
		if (!allowed.includes(options[key])) {
			fail(`--${key} must be one of ${allowed.join(', ')}`);
		}
	}
	return options;
}

function coerce(key, value) {
	if (BOOLEAN.has(key)) {
		return value === true || value === 'true' || value === '1';
	}
	if (typeof DEFAULTS[key] === 'number') {
		const n = Number(value);
		if (!Number.isInteger(n) || n < 0) {
			fail(`--${key} needs a non-negative integer, got ${value}`);
		}
		return n;
	}
	return String(value);
}

function usage() {
	process.stderr.write(`usage: node smsc.js [--port N] [--system-id ID] [--password PW]
  [--receipts none|delivered|undeliverable|mixed] [--receipt-delay-ms N]
  [--receipt-form text|tlv|both] [--receipt-id-format same|hex|decimal]
  [--first-id N] [--resp-id-pad N] [--receipt-id-pad N]
  [--throttle-every N] [--resp-delay-ms N] [--no-resp] [--no-delay] [--window-check N]
  [--enquire-link-ms N] [--mo-text TEXT] [--quiet] [--stats-interval-ms N]
  [--record FILE] [--commands]
`);
	process.exit(0);
}

function fail(message) {
	process.stderr.write(`smsc.js: ${message}\n`);
	process.exit(2);
}

const options = parseOptions(process.argv.slice(2), process.env);

// node-smpp turns schedule_delivery_time and validity_period into Dates;
// report them as the ESME wrote them (`000000001000000R`) instead.
smpp.filters.time.decode = (value) => value;

// --record: one JSON line per accepted submit_sm, written synchronously before
// the submit_sm_resp can leave, so a message the SMSC acknowledged is on disk
// even when this process is killed with SIGKILL a moment later.
const recordFd = options.record ? fs.openSync(options.record, 'a') : null;

function record(entry) {
	if (recordFd !== null) {
		fs.writeSync(recordFd, JSON.stringify(entry) + '\n');
	}
}

// ----------------------------------------------------------------- output --

// stdout to a pipe is synchronous on Linux: gather lines, write once per tick.
let outBuffer = [];
let flushScheduled = false;

function emit(event) {
	outBuffer.push(JSON.stringify(event));
	if (!flushScheduled) {
		flushScheduled = true;
		setImmediate(flush);
	}
}

function flush() {
	flushScheduled = false;
	if (outBuffer.length) {
		const chunk = outBuffer.join('\n') + '\n';
		outBuffer = [];
		process.stdout.write(chunk);
	}
}

// Per-PDU events are skipped in --quiet mode; lifecycle events always print.
function emitDetail(event) {
	if (!options.quiet) {
		emit(event);
	}
}

const stats = {
	binds: 0,
	bind_failures: 0,
	submit_sm: 0,
	accepted: 0,
	throttled: 0,
	unanswered: 0,
	receipts_sent: 0,
	deliver_sm_resp: 0,
	mo_sent: 0,
	max_outstanding: 0,
	window_exceeded: 0,
	unbinds: 0,
};

// ----------------------------------------------------------- message ids --

// Start ids high enough that hex and decimal spellings differ in length, and
// differently per run so a restarted SMSC does not reuse ids.
// --first-id starts elsewhere (say 42, to meet hex ids without letters).
let nextId = options['first-id'] || 0x10000000 + (Date.now() % 0x0fffffff);

function assignIds() {
	const n = nextId++;
	const decimal = String(n);
	const hex = n.toString(16);
	const pad = (id, width) => id.padStart(width, '0');
	let ids;
	switch (options['receipt-id-format']) {
		case 'hex':
			ids = { respId: decimal, receiptId: hex };
			break;
		case 'decimal':
			ids = { respId: hex, receiptId: decimal };
			break;
		default:
			ids = { respId: decimal, receiptId: decimal };
	}
	return {
		respId: pad(ids.respId, options['resp-id-pad']),
		receiptId: pad(ids.receiptId, options['receipt-id-pad']),
	};
}

// -------------------------------------------------------------- decoding --

// node-smpp decodes short_message / message_payload by data_coding (GSM 03.38
// for 0, UCS-2 BE for 8) into { udh: [Buffer], message: string }.
function messageText(value) {
	if (value === undefined || value === null) {
		return null;
	}
	if (Buffer.isBuffer(value)) {
		return value.toString('latin1');
	}
	if (typeof value === 'string') {
		return value;
	}
	return typeof value.message === 'string' ? value.message : value.message.toString('latin1');
}

function parseUdh(value) {
	if (!value || !Array.isArray(value.udh)) {
		return null;
	}
	for (const ie of value.udh) {
		if (ie[0] === 0x00 && ie[1] === 3) {
			return { iei: 0, ref: ie[2], total: ie[3], seq: ie[4] };
		}
		if (ie[0] === 0x08 && ie[1] === 4) {
			return { iei: 8, ref: ie.readUInt16BE(2), total: ie[4], seq: ie[5] };
		}
	}
	return { iei: null, elements: value.udh.map((ie) => ie.toString('hex')) };
}

function parseSar(pdu) {
	if (pdu.sar_msg_ref_num === undefined) {
		return null;
	}
	return { ref: pdu.sar_msg_ref_num, total: pdu.sar_total_segments, seq: pdu.sar_segment_seqnum };
}

// Reassembles concatenated messages; emits one "concatenated" event each.
const partsInProgress = new Map();

function collectPart(session, pdu, kind, info, text, messageId) {
	if (!info || !info.total || info.total < 2 || info.seq === undefined) {
		return;
	}
	const key = [session.id, pdu.source_addr, pdu.destination_addr, kind, info.ref].join('|');
	let entry = partsInProgress.get(key);
	if (!entry) {
		entry = { total: info.total, parts: new Map(), ids: [] };
		partsInProgress.set(key, entry);
	}
	entry.parts.set(info.seq, text);
	entry.ids.push(messageId);
	if (entry.parts.size === entry.total) {
		partsInProgress.delete(key);
		const ordered = [];
		for (let seq = 1; seq <= entry.total; seq++) {
			ordered.push(entry.parts.has(seq) ? entry.parts.get(seq) : '');
		}
		emitDetail({
			event: 'concatenated',
			kind,
			ref: info.ref,
			total: entry.total,
			source: pdu.source_addr,
			destination: pdu.destination_addr,
			text: ordered.join(''),
			message_ids: entry.ids,
		});
	}
}

// -------------------------------------------------------------- receipts --

function smppDate(date) {
	const two = (n) => String(n).padStart(2, '0');
	return (
		two(date.getUTCFullYear() % 100) +
		two(date.getUTCMonth() + 1) +
		two(date.getUTCDate()) +
		two(date.getUTCHours()) +
		two(date.getUTCMinutes())
	);
}

function receiptOutcome(destination) {
	switch (options.receipts) {
		case 'delivered':
			return 'delivered';
		case 'undeliverable':
			return 'undeliverable';
		case 'mixed': {
			// Deterministic so tests can predict it: odd last digit fails.
			const last = Number(String(destination).slice(-1));
			return Number.isInteger(last) && last % 2 === 1 ? 'undeliverable' : 'delivered';
		}
		default:
			return null;
	}
}

function sendReceipt(session, submit, ids, text, submittedAt) {
	const outcome = receiptOutcome(submit.destination_addr);
	if (!outcome) {
		return;
	}
	const wanted = submit.registered_delivery & 0x03;
	if (wanted === 0 || (wanted === 2 && outcome === 'delivered')) {
		return;
	}
	const delivered = outcome === 'delivered';
	const stat = delivered ? 'DELIVRD' : 'UNDELIV';
	const err = delivered ? '000' : '001';
	const target = receiptSession(session);
	if (!target) {
		emitDetail({ event: 'receipt_dropped', message_id: ids.receiptId, reason: 'no receiver bind' });
		return;
	}
	const fields = {
		source_addr_ton: submit.dest_addr_ton,
		source_addr_npi: submit.dest_addr_npi,
		source_addr: submit.destination_addr,
		dest_addr_ton: submit.source_addr_ton,
		dest_addr_npi: submit.source_addr_npi,
		destination_addr: submit.source_addr,
		esm_class: 0x04,
		data_coding: 0,
	};
	const form = options['receipt-form'];
	if (form === 'text' || form === 'both') {
		const excerpt = (text || '').slice(0, 20).replace(/[^\x20-\x7e]/g, '?');
		const body =
			`id:${ids.receiptId} sub:001 dlvrd:${delivered ? '001' : '000'} ` +
			`submit date:${smppDate(submittedAt)} done date:${smppDate(new Date())} ` +
			`stat:${stat} err:${err} text:${excerpt}`;
		// A Buffer passes through node-smpp's encoder untouched.
		fields.short_message = Buffer.from(body, 'latin1');
	} else {
		fields.short_message = Buffer.alloc(0);
	}
	if (form === 'tlv' || form === 'both') {
		fields.receipted_message_id = ids.receiptId;
		fields.message_state = delivered ? 2 : 5;
		if (!delivered) {
			fields.network_error_code = Buffer.from([0x03, 0x00, 0x01]);
		}
	}
	target.deliver_sm(fields);
	stats.receipts_sent++;
	emitDetail({
		event: 'receipt_sent',
		message_id: ids.receiptId,
		submit_message_id: ids.respId,
		stat,
		destination: submit.destination_addr,
	});
}

// Receipts go back on the bind that submitted when it can receive, else on
// another receiving bind of the same system_id.
function receiptSession(session) {
	if (session.canReceive && !session.closed) {
		return session;
	}
	for (const other of sessions) {
		if (other.canReceive && !other.closed && other.systemId === session.systemId) {
			return other;
		}
	}
	return null;
}

// -------------------------------------------------------------- sessions --

const sessions = new Set();
let nextSessionId = 1;
let submitCounter = 0;

function onBind(session, pdu, mode) {
	session.pause();
	if (session.bound) {
		session.send(pdu.response({ command_status: smpp.ESME_RALYBND }));
		session.resume();
		return;
	}
	let status = 0;
	if (pdu.system_id !== options['system-id']) {
		status = smpp.ESME_RINVSYSID;
	} else if (pdu.password !== options.password) {
		status = smpp.ESME_RINVPASWD;
	}
	emit({
		event: 'bind',
		session: session.id,
		mode,
		system_id: pdu.system_id,
		system_type: pdu.system_type,
		interface_version: pdu.interface_version,
		addr_ton: pdu.addr_ton,
		addr_npi: pdu.addr_npi,
		address_range: pdu.address_range,
		ok: status === 0,
		status,
	});
	if (status !== 0) {
		stats.bind_failures++;
		session.send(pdu.response({ command_status: status }), () => session.close());
		return;
	}
	stats.binds++;
	session.bound = true;
	session.systemId = pdu.system_id;
	session.canReceive = mode !== 'transmitter';
	session.canSubmit = mode !== 'receiver';
	session.send(pdu.response({ system_id: 'otpgate-smsc' }));
	session.resume();
	if (options['mo-text'] && session.canReceive) {
		session.deliver_sm({
			source_addr_ton: 1,
			source_addr_npi: 1,
			source_addr: '9779800000001',
			destination_addr: '12345',
			esm_class: 0,
			data_coding: 8,
			short_message: Buffer.from(
				// UTF-16BE: swap the bytes of Node's UTF-16LE.
				Buffer.from(options['mo-text'], 'utf16le').swap16(),
			),
		});
		stats.mo_sent++;
		emitDetail({ event: 'mo_sent', session: session.id, text: options['mo-text'] });
	}
	if (options['enquire-link-ms'] > 0) {
		session.enquireTimer = setInterval(() => {
			session.enquire_link((resp) => {
				emitDetail({ event: 'enquire_link_resp', session: session.id, status: resp.command_status });
			});
		}, options['enquire-link-ms']);
	}
}

function onSubmit(session, pdu) {
	if (!session.bound || !session.canSubmit) {
		session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
		return;
	}
	stats.submit_sm++;
	submitCounter++;
	session.outstanding++;
	if (session.outstanding > session.maxOutstanding) {
		session.maxOutstanding = session.outstanding;
		stats.max_outstanding = Math.max(stats.max_outstanding, session.outstanding);
	}
	const limit = options['window-check'];
	if (limit > 0 && session.outstanding > limit) {
		stats.window_exceeded++;
		emit({ event: 'window_exceeded', session: session.id, outstanding: session.outstanding, limit });
	}

	const throttleEvery = options['throttle-every'];
	const throttled = throttleEvery > 0 && submitCounter % throttleEvery === 0;
	const submittedAt = new Date();

	if (throttled) {
		stats.throttled++;
		emitDetail({
			event: 'submit_sm',
			session: session.id,
			sequence_number: pdu.sequence_number,
			status: smpp.ESME_RTHROTTLED,
			destination: pdu.destination_addr,
		});
		answer(session, pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
		return;
	}

	const ids = assignIds();
	const fromPayload = pdu.message_payload !== undefined;
	const carrier = fromPayload ? pdu.message_payload : pdu.short_message;
	const text = messageText(carrier);
	const udh = fromPayload ? null : parseUdh(pdu.short_message);
	const sar = parseSar(pdu);
	stats.accepted++;
	emitDetail({
		event: 'submit_sm',
		session: session.id,
		sequence_number: pdu.sequence_number,
		status: 0,
		message_id: ids.respId,
		service_type: pdu.service_type,
		source: pdu.source_addr,
		source_ton: pdu.source_addr_ton,
		source_npi: pdu.source_addr_npi,
		destination: pdu.destination_addr,
		dest_ton: pdu.dest_addr_ton,
		dest_npi: pdu.dest_addr_npi,
		esm_class: pdu.esm_class,
		protocol_id: pdu.protocol_id,
		priority_flag: pdu.priority_flag,
		schedule_delivery_time: pdu.schedule_delivery_time,
		validity_period: pdu.validity_period,
		registered_delivery: pdu.registered_delivery,
		replace_if_present_flag: pdu.replace_if_present_flag,
		data_coding: pdu.data_coding,
		sm_default_msg_id: pdu.sm_default_msg_id,
		text,
		message_payload: fromPayload,
		udh,
		sar,
	});
	record({
		at: submittedAt.getTime(),
		session: session.id,
		message_id: ids.respId,
		destination: pdu.destination_addr,
		text,
		// How this submit_sm is (to be) answered: now, after resp-delay-ms, or never.
		answer: options['no-resp'] ? 'never' : options['resp-delay-ms'] > 0 ? 'delayed' : 'now',
	});
	if (udh && udh.iei !== null) {
		collectPart(session, pdu, 'udh', udh, text, ids.respId);
	} else if (sar) {
		collectPart(session, pdu, 'sar', sar, text, ids.respId);
	}

	if (options['no-resp']) {
		stats.unanswered++;
		return;
	}
	answer(session, pdu.response({ message_id: ids.respId }), () => {
		const delay = options['receipt-delay-ms'];
		if (delay > 0) {
			setTimeout(() => sendReceipt(session, pdu, ids, text, submittedAt), delay);
		} else {
			sendReceipt(session, pdu, ids, text, submittedAt);
		}
	});
}

function answer(session, resp, then) {
	const send = () => {
		if (session.closed) {
			return;
		}
		session.outstanding--;
		session.send(resp);
		if (then) {
			then();
		}
	};
	const delay = options['resp-delay-ms'];
	if (delay > 0) {
		setTimeout(send, delay);
	} else {
		send();
	}
}

const server = smpp.createServer((session) => {
	// node leaves Nagle's algorithm on: a small PDU written while an earlier one
	// is unacknowledged waits for that acknowledgement, which the ESME's kernel
	// may delay. That lets the SMSC pack its replies and receipts into fewer
	// segments; --no-delay sends each at once instead.
	if (options['no-delay']) {
		session.socket.setNoDelay(true);
	}
	session.id = nextSessionId++;
	session.bound = false;
	session.closed = false;
	session.outstanding = 0;
	session.maxOutstanding = 0;
	sessions.add(session);
	emitDetail({ event: 'connect', session: session.id });

	session.on('bind_transceiver', (pdu) => onBind(session, pdu, 'transceiver'));
	session.on('bind_transmitter', (pdu) => onBind(session, pdu, 'transmitter'));
	session.on('bind_receiver', (pdu) => onBind(session, pdu, 'receiver'));
	session.on('submit_sm', (pdu) => onSubmit(session, pdu));
	session.on('enquire_link', (pdu) => session.send(pdu.response()));
	session.on('deliver_sm_resp', (pdu) => {
		stats.deliver_sm_resp++;
		emitDetail({
			event: 'deliver_sm_resp',
			session: session.id,
			sequence_number: pdu.sequence_number,
			status: pdu.command_status,
		});
	});
	session.on('unbind', (pdu) => {
		stats.unbinds++;
		emit({ event: 'unbind', session: session.id });
		session.send(pdu.response(), () => session.close());
	});
	session.on('unknown', (pdu) => {
		emitDetail({ event: 'unknown_command', session: session.id, command_id: pdu.command_id });
		session.send(pdu.response());
	});
	session.on('error', (err) => {
		emitDetail({ event: 'session_error', session: session.id, error: String(err && err.message) });
		session.destroy();
	});
	session.on('close', () => {
		session.closed = true;
		if (session.enquireTimer) {
			clearInterval(session.enquireTimer);
		}
		sessions.delete(session);
		emitDetail({
			event: 'disconnect',
			session: session.id,
			max_outstanding: session.maxOutstanding,
		});
	});
});

server.on('error', (err) => {
	process.stderr.write(`smsc.js: ${err.message}\n`);
	process.exit(1);
});

server.listen(options.port, '127.0.0.1', () => {
	emit({ event: 'listening', port: server.address().port });
	flush();
});

let statsTimer = null;
if (options['stats-interval-ms'] > 0) {
	statsTimer = setInterval(() => emit({ event: 'stats', ...stats }), options['stats-interval-ms']);
}

function shutdown(signal) {
	if (statsTimer) {
		clearInterval(statsTimer);
	}
	emit({ event: 'summary', signal, ...stats });
	flush();
	for (const session of sessions) {
		session.destroy();
	}
	server.close();
	// Let stdout drain before leaving.
	process.stdout.write('', () => process.exit(0));
}

// SIGUSR1: stop misbehaving (no more throttling, delays or silence) from now on;
// submit_sm already left unanswered stay unanswered.
process.on('SIGUSR1', () => {
	options['throttle-every'] = 0;
	options['resp-delay-ms'] = 0;
	options['no-resp'] = false;
	emit({ event: 'behaving' });
});
// --commands: one command a line on stdin, applied to every submit_sm from
// then on and acknowledged with an event:
//   receipts none|delivered|undeliverable|mixed  ->  {"event":"receipts","mode":...}
// Anything else is refused ({"event":"command_refused"}) and changes nothing.
if (options.commands) {
	require('readline')
		.createInterface({ input: process.stdin })
		.on('line', (line) => {
			const [command, value, extra] = line.trim().split(/\s+/);
			if (command === 'receipts' && RECEIPT_MODES.includes(value) && extra === undefined) {
				options.receipts = value;
				emit({ event: 'receipts', mode: value });
			} else {
				emit({ event: 'command_refused', line: line.slice(0, 80) });
			}
		});
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
