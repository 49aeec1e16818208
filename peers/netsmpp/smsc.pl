#!/usr/bin/perl
# A small SMPP 3.4 SMSC on Perl's Net::SMPP in listening mode (Debian
# libnet-smpp-perl): a second SMSC implementation, besides node-smpp, for
# otpgate's tests. Listens on 127.0.0.1 only; one process, no fork, so killing
# it drops every connection at once (the tests restart it mid-stream).
#
#   perl peers/netsmpp/smsc.pl --port 0 --receipts mixed
#   {"event":"listening","port":40123}
#
# Flags (all `--name value`):
#   --port N                 0 (default) picks a free port
#   --system-id ID           otpgate; a wrong one is ESME_RINVSYSID
#   --password PW            secret; a wrong one is ESME_RINVPASWD
#   --receipts MODE          none (default) | delivered | undeliverable | mixed
#                            (mixed: destinations ending in an odd digit UNDELIV)
#   --throttle-every N       answer every Nth submit_sm with ESME_RTHROTTLED (0: off)
#
# Message ids are 10 upper-case hex digits, new across restarts; a receipt
# spells its id the same way in its text and in receipted_message_id. One JSON event per stdout line:
# listening, connect, bind, submit_sm, concatenated, receipt_sent,
# deliver_sm_resp, enquire_link, unbind, disconnect, generic_nack.
use strict;
use warnings;
use Encode ();
use IO::Select;
use JSON::PP ();
use Net::SMPP;
use POSIX qw(strftime);

my %opt = (
    port             => 0,
    'system-id'      => 'otpgate',
    password         => 'secret',
    receipts         => 'none',
    'throttle-every' => 0,
);
while (@ARGV) {
    my $flag = shift @ARGV;
    $flag =~ /^--([a-z-]+)$/ && exists $opt{$1} or die "unknown flag $flag\n";
    defined($opt{$1} = shift @ARGV) or die "$flag needs a value\n";
}
$opt{receipts} =~ /^(none|delivered|undeliverable|mixed)$/
  or die "--receipts must be none, delivered, undeliverable or mixed\n";

$| = 1;
my $json = JSON::PP->new->canonical->utf8;
sub event { my ($name, %f) = @_; print $json->encode({ event => $name, %f }), "\n"; }

use constant {
    STATUS_OK        => 0x00,
    ESME_RINVBNDSTS  => 0x04,
    ESME_RINVCMDID   => 0x03,
    ESME_RINVPASWD   => 0x0e,
    ESME_RINVSYSID   => 0x0f,
    ESME_RTHROTTLED  => 0x58,
    STATE_DELIVERED  => 2,
    STATE_UNDELIVERABLE => 5,
};

my $listener = Net::SMPP->new_listen('127.0.0.1', port => $opt{port}, system_id => 'netsmpp')
  or die "cannot listen on 127.0.0.1:$opt{port}: $!\n";
event('listening', port => $listener->sockport);

my $select = IO::Select->new($listener);
my (%session_of, %bound);    # by socket: session number, bind mode
# Ids start at a random block of 65,536 (10 hex digits): a restarted SMSC must
# not hand out again the ids whose receipts its clients may still match, even
# when it restarts within the second (a clock-based start did, and a test saw a
# receipt go to the older part).
my ($sessions, $submits, $next_id) = (0, 0, int(rand(1 << 24)) << 16);
my %parts;                   # concatenation key -> { total, parts => {seq => [text, id]} }

my %bind_resp = (
    0x00000001 => [ 'receiver',    'bind_receiver_resp' ],
    0x00000002 => [ 'transmitter', 'bind_transmitter_resp' ],
    0x00000009 => [ 'transceiver', 'bind_transceiver_resp' ],
);

sub close_session {
    my ($smpp, $why) = @_;
    event('disconnect', session => $session_of{$smpp}, reason => $why);
    $select->remove($smpp);
    delete $session_of{$smpp};
    delete $bound{$smpp};
    $smpp->close;
}

# The text of a short_message: GSM 03.38 (unpacked septets) for data_coding 0,
# UCS-2 big-endian for 8, Latin-1 otherwise.
sub decode_text {
    my ($coding, $bytes) = @_;
    return Encode::decode('gsm0338', $bytes) if $coding == 0;
    return Encode::decode('UTF-16BE', $bytes) if $coding == 8;
    return Encode::decode('iso-8859-1', $bytes);
}

# Splits a user data header off `$bytes`; returns (udh info or undef, rest).
sub split_udh {
    my ($bytes) = @_;
    my $udhl = ord substr($bytes, 0, 1);
    my $header = substr($bytes, 1, $udhl);
    my $rest = substr($bytes, 1 + $udhl);
    my $i = 0;
    while ($i + 2 <= length $header) {
        my ($iei, $len) = unpack 'CC', substr($header, $i, 2);
        my $v = substr($header, $i + 2, $len);
        return ({ iei => 0, ref => unpack('C', $v), total => unpack('x C', $v), seq => unpack('x2 C', $v) }, $rest)
          if $iei == 0 && $len == 3;
        return ({ iei => 8, ref => unpack('n', $v), total => unpack('x2 C', $v), seq => unpack('x3 C', $v) }, $rest)
          if $iei == 8 && $len == 4;
        $i += 2 + $len;
    }
    return (undef, $rest);
}

sub receipt_state {
    my ($destination) = @_;
    return 'DELIVRD' if $opt{receipts} eq 'delivered';
    return 'UNDELIV' if $opt{receipts} eq 'undeliverable';
    return ($destination =~ /[13579]$/) ? 'UNDELIV' : 'DELIVRD';
}

sub send_receipt {
    my ($smpp, $pdu, $message_id, $text) = @_;
    my $stat = receipt_state($pdu->{destination_addr});
    my $now = strftime('%y%m%d%H%M', localtime);
    my $err = $stat eq 'DELIVRD' ? '000' : '001';
    (my $snippet = substr($text, 0, 20)) =~ s/[^\x20-\x7e]/?/g;
    my $body = "id:$message_id sub:001 dlvrd:" . ($stat eq 'DELIVRD' ? '001' : '000')
      . " submit date:$now done date:$now stat:$stat err:$err text:$snippet";
    my @failure = $stat eq 'DELIVRD' ? () : (network_error_code => pack('Cn', 3, 1));
    my $seq = $smpp->deliver_sm(
        source_addr_ton      => $pdu->{dest_addr_ton},
        source_addr_npi      => $pdu->{dest_addr_npi},
        source_addr          => $pdu->{destination_addr},
        dest_addr_ton        => $pdu->{source_addr_ton},
        dest_addr_npi        => $pdu->{source_addr_npi},
        destination_addr     => $pdu->{source_addr},
        esm_class            => 0x04,
        data_coding          => 0,
        short_message        => $body,
        receipted_message_id => "$message_id\0",
        message_state        => pack('C', $stat eq 'DELIVRD' ? STATE_DELIVERED : STATE_UNDELIVERABLE),
        @failure,
        async => 1,
    );
    event('receipt_sent', session => $session_of{$smpp}, sequence_number => $seq,
        message_id => $message_id, stat => $stat, destination => $pdu->{destination_addr});
}

sub on_submit {
    my ($smpp, $pdu) = @_;
    my $session = $session_of{$smpp};
    unless ($bound{$smpp}) {
        $smpp->submit_sm_resp(seq => $pdu->{seq}, status => ESME_RINVBNDSTS, message_id => '');
        return;
    }
    $submits++;
    if ($opt{'throttle-every'} > 0 && $submits % $opt{'throttle-every'} == 0) {
        $smpp->submit_sm_resp(seq => $pdu->{seq}, status => ESME_RTHROTTLED, message_id => '');
        event('submit_sm', session => $session, status => ESME_RTHROTTLED, destination => $pdu->{destination_addr});
        return;
    }
    my $bytes = $pdu->{short_message};
    $bytes = $pdu->{message_payload} if !length($bytes) && defined $pdu->{message_payload};
    my $udh;
    ($udh, $bytes) = split_udh($bytes) if $pdu->{esm_class} & 0x40;
    my $sar;
    if (defined $pdu->{sar_msg_ref_num}) {
        $sar = {
            ref   => unpack('n', $pdu->{sar_msg_ref_num}),
            total => unpack('C', $pdu->{sar_total_segments}),
            seq   => unpack('C', $pdu->{sar_segment_seqnum}),
        };
    }
    my $text = decode_text($pdu->{data_coding}, $bytes);
    my $message_id = sprintf('%010X', $next_id++);
    # Recorded before it is answered: killed between the two, the peer must
    # not have told the gateway "accepted" for a message its record lacks.
    event('submit_sm',
        session             => $session,
        sequence_number     => $pdu->{seq},
        status              => STATUS_OK,
        message_id          => $message_id,
        source              => $pdu->{source_addr},
        destination         => $pdu->{destination_addr},
        esm_class           => $pdu->{esm_class},
        data_coding         => $pdu->{data_coding},
        registered_delivery => $pdu->{registered_delivery},
        text                => $text,
        udh                 => $udh,
        sar                 => $sar);
    $smpp->submit_sm_resp(seq => $pdu->{seq}, message_id => $message_id);
    if (my $c = $udh || $sar) {
        my $key = join "\0", ($udh ? 'udh' : 'sar'), $pdu->{source_addr}, $pdu->{destination_addr}, $c->{ref};
        my $whole = $parts{$key} ||= { total => $c->{total}, parts => {} };
        $whole->{parts}{ $c->{seq} } = [ $text, $message_id ];
        if (keys %{ $whole->{parts} } == $whole->{total}) {
            my @seqs = sort { $a <=> $b } keys %{ $whole->{parts} };
            event('concatenated',
                kind        => ($udh ? 'udh' : 'sar'),
                ref         => $c->{ref},
                total       => $whole->{total},
                destination => $pdu->{destination_addr},
                text        => join('', map { $whole->{parts}{$_}[0] } @seqs),
                message_ids => [ map { $whole->{parts}{$_}[1] } @seqs ]);
            delete $parts{$key};
        }
    }
    send_receipt($smpp, $pdu, $message_id, $text)
      if $opt{receipts} ne 'none' && ($pdu->{registered_delivery} & 0x03);
}

sub on_pdu {
    my ($smpp, $pdu) = @_;
    my $session = $session_of{$smpp};
    my $cmd = $pdu->{cmd};
    if (my $b = $bind_resp{$cmd}) {
        my ($mode, $resp) = @$b;
        my $status =
            $pdu->{system_id} ne $opt{'system-id'} ? ESME_RINVSYSID
          : $pdu->{password} ne $opt{password}     ? ESME_RINVPASWD
          :                                          STATUS_OK;
        $smpp->$resp(seq => $pdu->{seq}, status => $status, system_id => 'netsmpp');
        event('bind', session => $session, mode => $mode, system_id => $pdu->{system_id},
            interface_version => $pdu->{interface_version},
            ok => ($status == STATUS_OK ? JSON::PP::true : JSON::PP::false), status => $status);
        if ($status == STATUS_OK) {
            $bound{$smpp} = $mode;
        } else {
            close_session($smpp, 'bind refused');
        }
    } elsif ($cmd == Net::SMPP::CMD_submit_sm) {
        on_submit($smpp, $pdu);
    } elsif ($cmd == Net::SMPP::CMD_deliver_sm_resp) {
        event('deliver_sm_resp', session => $session, sequence_number => $pdu->{seq}, status => $pdu->{status});
    } elsif ($cmd == Net::SMPP::CMD_enquire_link) {
        $smpp->enquire_link_resp(seq => $pdu->{seq});
        event('enquire_link', session => $session);
    } elsif ($cmd == Net::SMPP::CMD_enquire_link_resp) {
        # answers to nothing we sent; ignored
    } elsif ($cmd == Net::SMPP::CMD_unbind) {
        $smpp->unbind_resp(seq => $pdu->{seq});
        event('unbind', session => $session);
        close_session($smpp, 'unbind');
    } elsif ($cmd == Net::SMPP::CMD_generic_nack) {
        event('generic_nack', session => $session, sequence_number => $pdu->{seq}, status => $pdu->{status});
    } else {
        $smpp->generic_nack(seq => $pdu->{seq}, status => ESME_RINVCMDID);
        event('unknown_command', session => $session, command_id => $cmd);
    }
}

$SIG{TERM} = $SIG{INT} = sub { event('summary', submit_sm => $submits); exit 0 };
$SIG{PIPE} = 'IGNORE';

while (1) {
    for my $ready ($select->can_read) {
        if ($ready == $listener) {
            my $smpp = $listener->accept or next;
            $session_of{$smpp} = ++$sessions;
            $select->add($smpp);
            event('connect', session => $sessions);
            next;
        }
        # Net::SMPP reads a whole PDU, blocking until it has arrived.
        my $pdu = $ready->read_pdu;
        if (!$pdu) {
            close_session($ready, 'closed');
            next;
        }
        on_pdu($ready, $pdu);
    }
}
