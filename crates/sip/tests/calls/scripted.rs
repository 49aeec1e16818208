//! A callee scripted in the test, for the dialog details real peers do not exercise:
//! a retransmitted 200 OK, Record-Route, and an in-dialog OPTIONS mid-prompt.

use std::net::SocketAddr;
use std::time::Duration;

use sip::message::{Message, Method, StartLine, param};
use sip::{CallOutcome, Hangup, SipUri};
use tokio::net::UdpSocket;

use crate::helpers::*;

async fn recv(socket: &UdpSocket) -> (Message, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(20), socket.recv_from(&mut buf))
        .await
        .expect("the client went quiet")
        .unwrap();
    (Message::parse(&buf[..n]).unwrap(), from)
}

/// The response to `request` with the dialog headers copied.
fn answer(request: &Message, status: u16, reason: &str, to_tag: &str) -> Message {
    let mut m = Message::response(status, reason);
    for name in ["Via", "From"] {
        m.push_header(name, request.header(name).unwrap());
    }
    let to = request.header("To").unwrap();
    if param(to, "tag").is_some() {
        m.push_header("To", to);
    } else {
        m.push_header("To", format!("{to};tag={to_tag}"));
    }
    for name in ["Call-ID", "CSeq"] {
        m.push_header(name, request.header(name).unwrap());
    }
    m
}

#[tokio::test]
async fn dialog_requests_follow_record_route_and_a_lost_ack_is_resent() {
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let port = peer.local_addr().unwrap().port();
    let sink = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let client = client(trunk(port));
    let to = SipUri::from_parts("callee", &format!("127.0.0.1:{port}")).unwrap();
    let audio = tone(0.6);
    let call = tokio::spawn(async move { client.call(&to, &caller(), &audio).await });

    let (invite, from) = recv(&peer).await;
    assert_eq!(invite.method(), Some(&Method::Invite));
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {sink_port} RTP/AVP 0\r\n"
    );
    let ok = answer(&invite, 200, "OK", "callee1")
        .with_header("Contact", format!("<sip:callee@127.0.0.1:{port};ob>"))
        .with_header("Record-Route", "<sip:edge.test;lr>, <sip:core.test;lr>")
        .with_body("application/sdp", sdp);
    peer.send_to(&ok.to_bytes(), from).await.unwrap();
    let (ack, _) = recv(&peer).await;
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq(), Some((1, Method::Ack)));
    assert_ne!(
        ack.top_via_branch(),
        invite.top_via_branch(),
        "a 2xx ACK is its own transaction"
    );

    // As if that ACK were lost: the 200 again must be ACKed again.
    peer.send_to(&ok.to_bytes(), from).await.unwrap();
    let (again, _) = recv(&peer).await;
    assert_eq!(again.method(), Some(&Method::Ack));
    assert_eq!(again.cseq(), Some((1, Method::Ack)));

    // An in-dialog OPTIONS while the prompt plays is answered and changes nothing.
    let options = Message::request(Method::Options, "sip:9779700000000@127.0.0.1")
        .with_header(
            "Via",
            format!("SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKopt"),
        )
        .with_header("From", ok.header("To").unwrap())
        .with_header("To", invite.header("From").unwrap())
        .with_header("Call-ID", invite.call_id().unwrap())
        .with_header("CSeq", "1 OPTIONS");
    peer.send_to(&options.to_bytes(), from).await.unwrap();
    let (options_ok, _) = recv(&peer).await;
    assert_eq!(options_ok.status(), Some(200));
    assert_eq!(options_ok.top_via_branch(), Some("z9hG4bKopt"));

    let (bye, _) = recv(&peer).await;
    assert_eq!(
        bye.start,
        StartLine::Request {
            method: Method::Bye,
            uri: format!("sip:callee@127.0.0.1:{port};ob")
        },
        "BYE goes to the callee's Contact"
    );
    assert_eq!(
        bye.header_all("Route").collect::<Vec<_>>(),
        ["<sip:core.test;lr>", "<sip:edge.test;lr>"],
        "the route set is the Record-Route reversed"
    );
    assert_eq!(bye.cseq(), Some((2, Method::Bye)));
    assert_eq!(param(bye.header("To").unwrap(), "tag"), Some("callee1"));
    assert_eq!(bye.header("From"), invite.header("From"));
    peer.send_to(&answer(&bye, 200, "OK", "callee1").to_bytes(), from)
        .await
        .unwrap();

    let report = tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        report.outcome,
        CallOutcome::Answered {
            played: Duration::from_millis(600),
            completed: true,
            hangup: Hangup::AudioEnded
        }
    );
}
