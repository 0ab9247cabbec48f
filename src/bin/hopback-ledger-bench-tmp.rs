use futures::StreamExt;
use lapin::options::*;
use lapin::types::*;
use std::time::Instant;
#[tokio::main]
async fn main() {
    let cfg = hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        std::path::Path::new("/x"),
        false,
        &Default::default(),
    )
    .unwrap();
    let s = hopback::broker::session::connect(&cfg.profile, "tmp", "b")
        .await
        .unwrap();
    let name = format!("tmpstream-{}", std::process::id());
    let l = hopback::ledger::Ledger::open_stream(&s, &cfg, &name).await;
    let mut infl = futures::stream::FuturesUnordered::new();
    for i in 0..100_000u64 {
        infl.push(
            l.append(
                l.event(hopback::ledger::EventKind::Note, Some("b"))
                    .reason(format!("operator note number {i}: v2 looks fine")),
            ),
        );
        while infl.len() >= 1000 {
            infl.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = infl.next().await {
        r.unwrap();
    }
    for prefetch in [2000u16, 10000, 30000] {
        let ch = s.channel().await.unwrap();
        ch.basic_qos(prefetch, Default::default()).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let t = Instant::now();
        let mut c = ch
            .basic_consume(name.as_str().into(), "".into(), Default::default(), args)
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(Ok(d)) = c.next().await {
            n += 1;
            if n % 1000 == 0 {
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
            if n == 100_000 {
                break;
            }
        }
        eprintln!("prefetch {prefetch}: raw consume {n} in {:?}", t.elapsed());
        ch.close(200, "x".into()).await.unwrap();
    }
    hopback::ledger::delete_stream(&s, &name).await.unwrap();
}
