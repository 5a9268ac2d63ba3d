//! MLLP over real loopback sockets with a test handler that maps and records messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use phip_hl7v2::ack::read_ack;
use phip_hl7v2::fhir::{self, Mapped};
use phip_hl7v2::mllp::{self, frame, MllpClient, ServerConfig};
use phip_hl7v2::{Ack, AckCode, ErrorCode, Message};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Maps every message to FHIR and records what it would store, like the engine will.
#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<(String, String)>>,
}

impl mllp::MessageHandler for Recorder {
    fn handle(&self, message: Message) -> Ack {
        match fhir::map_message(&message) {
            Ok(mapped) => {
                let what = match mapped {
                    Mapped::Adt(a) => a.patient["name"][0]["family"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    Mapped::Merge(m) => format!("merge {}", m[0].retired[0].value),
                    Mapped::Results(r) => format!("{} reports", r.reports.len()),
                };
                self.applied
                    .lock()
                    .unwrap()
                    .push((message.control_id().into_owned(), what));
                Ack::accept(&message)
            }
            Err(error) => Ack::error(&message, error),
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    let (stop, stopped) = oneshot::channel();
    let handler: Arc<dyn mllp::MessageHandler> = recorder.clone();
    let task = tokio::spawn(mllp::serve(listener, handler, config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        recorder,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn ack_of(bytes: &[u8]) -> (AckCode, String, Vec<phip_hl7v2::Hl7Error>) {
    read_ack(&Message::parse(bytes).unwrap()).unwrap()
}

const A01: &str = "MSH|^~\\&|HIS|HOSP|PHIP|HUB|20240102||ADT^A01^ADT_A01|M1|P|2.5.1\rPID|1||P1^^^^MR||DOE^JANE||19800101|F\rPV1|1|I|W1^101^1||||||||||||||||V1\r";

#[tokio::test]
async fn adt_oru_merge_and_gb18030_over_one_connection() {
    let server = start(ServerConfig::default()).await;
    let mut client = MllpClient::connect(server.addr).await.unwrap();
    let a08 = A01
        .replace("ADT^A01^ADT_A01|M1", "ADT^A08^ADT_A01|M2")
        .replace("DOE^JANE", "DOE^JANET");
    let a40 = "MSH|^~\\&|HIS|HOSP|PHIP|HUB|20240102||ADT^A40^ADT_A39|M3|P|2.5.1\rPID|1||P1^^^^MR\rMRG|P0^^^^MR\r";
    let oru = "MSH|^~\\&|LIS|HOSP|PHIP|HUB|20240102||ORU^R01^ORU_R01|M4|P|2.5.1\rPID|1||P1\rOBR|1||R1|GLU^Glucose^L\rOBX|1|NM|GLU^Glucose^L||5.4|mmol/L^^UCUM||||||F\r";
    let gb = "MSH|^~\\&|HIS|协和医院|PHIP|HUB|20240102||ADT^A04^ADT_A01|M5|P|2.5|||||CHN|GB 18030-2000\rPID|1||P2^^^^MR||张^伟||19900307|M\r";
    let (gb_bytes, _, _) = encoding_rs::GB18030.encode(gb);
    for (bytes, id) in [
        (A01.as_bytes().to_vec(), "M1"),
        (a08.into_bytes(), "M2"),
        (a40.as_bytes().to_vec(), "M3"),
        (oru.as_bytes().to_vec(), "M4"),
        (gb_bytes.to_vec(), "M5"),
    ] {
        let reply = client.send(&bytes).await.unwrap();
        let (code, control_id, errors) = ack_of(&reply);
        assert_eq!(
            (code, control_id.as_str()),
            (AckCode::Accept, id),
            "{errors:?}"
        );
    }
    let applied = server.recorder.applied.lock().unwrap().clone();
    let expected: Vec<(String, String)> = [
        ("M1", "DOE"),
        ("M2", "DOE"),
        ("M3", "merge P0"),
        ("M4", "1 reports"),
        ("M5", "张"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(applied, expected);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn the_gb18030_reply_is_gb18030() {
    let server = start(ServerConfig::default()).await;
    let bad = "MSH|^~\\&|HIS|协和医院|PHIP|HUB|20240102||ADT^A04|G1|P|2.5|||||CHN|GB 18030-2000\rPID|1||P2||张^伟||1990-03-07\r";
    let (bytes, _, _) = encoding_rs::GB18030.encode(bad);
    let reply = mllp::send(server.addr, &bytes).await.unwrap();
    assert!(std::str::from_utf8(&reply).is_err());
    let message = Message::parse(&reply).unwrap();
    assert_eq!(message.get("MSH-6").as_deref(), Some("协和医院"));
    let (code, _, errors) = read_ack(&message).unwrap();
    assert_eq!(code, AckCode::Error);
    assert_eq!(errors[0].location.as_ref().unwrap().to_string(), "PID-7");
    server.shutdown().await;
}

#[tokio::test]
async fn split_frames_and_two_messages_in_one_write() {
    let server = start(ServerConfig::default()).await;
    let mut client = MllpClient::connect(server.addr).await.unwrap();
    // One frame dribbled out in small pieces.
    let wire = frame(A01.as_bytes());
    for chunk in wire.chunks(7) {
        client.write_raw(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(ack_of(&client.receive().await.unwrap()).1, "M1");
    // Two frames in one write: two ACKs, in order.
    let mut both = frame(A01.replace("|M1|", "|M6|").as_bytes());
    both.extend(frame(A01.replace("|M1|", "|M7|").as_bytes()));
    client.write_raw(&both).await.unwrap();
    assert_eq!(ack_of(&client.receive().await.unwrap()).1, "M6");
    assert_eq!(ack_of(&client.receive().await.unwrap()).1, "M7");
    assert_eq!(server.recorder.applied.lock().unwrap().len(), 3);
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_messages_get_naks_naming_segment_and_field() {
    let server = start(ServerConfig::default()).await;
    let mut client = MllpClient::connect(server.addr).await.unwrap();

    let no_control_id = A01.replace("|M1|", "||");
    let (code, id, errors) = ack_of(&client.send(no_control_id.as_bytes()).await.unwrap());
    assert_eq!((code, id.as_str()), (AckCode::Reject, ""));
    assert_eq!(errors[0].code, ErrorCode::RequiredFieldMissing);
    assert_eq!(errors[0].location.as_ref().unwrap().to_string(), "MSH-10");

    let no_msh = b"PID|1||P1\r";
    let (code, _, errors) = ack_of(&client.send(no_msh).await.unwrap());
    assert_eq!(code, AckCode::Reject);
    assert_eq!(errors[0].code, ErrorCode::SegmentSequenceError);

    let no_pid3 = A01.replace("PID|1||P1^^^^MR|", "PID|1|||");
    let (code, id, errors) = ack_of(&client.send(no_pid3.as_bytes()).await.unwrap());
    assert_eq!((code, id.as_str()), (AckCode::Error, "M1"));
    assert_eq!(errors[0].location.as_ref().unwrap().to_string(), "PID-3");

    let unsupported = A01.replace("ADT^A01^ADT_A01", "MFN^M02^MFN_M02");
    let (code, _, errors) = ack_of(&client.send(unsupported.as_bytes()).await.unwrap());
    assert_eq!(code, AckCode::Reject);
    assert_eq!(errors[0].code, ErrorCode::UnsupportedMessageType);

    // Nothing malformed was applied, and the connection still works.
    assert!(server.recorder.applied.lock().unwrap().is_empty());
    assert_eq!(
        ack_of(&client.send(A01.as_bytes()).await.unwrap()).0,
        AckCode::Accept
    );
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_frames_close_the_connection() {
    let server = start(ServerConfig {
        max_message_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut client = MllpClient::connect(server.addr)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let huge = format!("{A01}NTE|1||{}\r", "x".repeat(4096));
    let err = client.send(huge.as_bytes()).await.unwrap_err();
    assert!(
        matches!(err, mllp::MllpError::Closed | mllp::MllpError::Io(_)),
        "{err:?}"
    );
    assert!(server.recorder.applied.lock().unwrap().is_empty());
    // The server itself goes on serving.
    let reply = mllp::send(server.addr, A01.as_bytes()).await.unwrap();
    assert_eq!(ack_of(&reply).0, AckCode::Accept);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_panics_become_ar() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Arc<dyn mllp::MessageHandler> = Arc::new(|message: Message| -> Ack {
        if message.control_id() == "boom" {
            panic!("handler bug");
        }
        Ack::accept(&message)
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let task = tokio::spawn(mllp::serve(listener, handler, config, async {
        let _ = stopped.await;
    }));
    let mut client = MllpClient::connect(addr).await.unwrap();
    let (code, _, errors) = ack_of(
        &client
            .send(A01.replace("|M1|", "|boom|").as_bytes())
            .await
            .unwrap(),
    );
    assert_eq!(code, AckCode::Reject);
    assert_eq!(errors[0].code, ErrorCode::ApplicationInternalError);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        client.send(A01.as_bytes()).await.is_err(),
        "idle connection should be closed"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
