//! 50 MiB up and 100 MiB down through the proxy without its memory growing
//! with the body. A test binary of its own, so no other test shares the RSS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{rss_kib, serve_proxy, Envd, TableResolver};
use futures::StreamExt;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const MIB: usize = 1 << 20;
/// The proxy may hold a few socket buffers' worth of data, never the body.
const MAX_GROWTH_KIB: u64 = 24 * 1024;

/// Samples this process's RSS every 20 ms until dropped; keeps the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib("/proc/self/status")));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib("/proc/self/status"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.fetch_max(rss_kib("/proc/self/status"), Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_and_download_stream_with_flat_memory() {
    let envd = Envd::start("tok").await;
    let resolver = Arc::new(TableResolver::default());
    resolver.add("big", "tok", envd.addr);
    let proxy = serve_proxy(resolver.clone(), Duration::from_secs(1)).await;
    let client = reqwest::Client::new();

    // Warm up the client, the proxy's pool and the allocator.
    let warm = client.get(format!("http://{proxy}/health")).header("novita-sandbox-id", "big").send().await.unwrap();
    assert!(warm.status().is_success());
    let baseline = rss_kib("/proc/self/status");

    // Upload 50 MiB generated on the fly: one shared 1 MiB chunk, 50 times.
    let up_path = envd.home().join("up.bin");
    let chunk = Bytes::from((0..MIB).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let chunks = futures::stream::iter((0..50).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let rss = PeakRss::start();
    let began = Instant::now();
    let resp = client
        .post(format!("http://{proxy}/files"))
        .query(&[("path", up_path.to_str().unwrap())])
        .header("content-type", "application/octet-stream")
        .header("content-length", (50 * MIB).to_string())
        .header("novita-sandbox-id", "big")
        .header("x-access-token", "tok")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status} {text}");
    let up_time = began.elapsed();
    let up_peak = rss.peak();
    drop(rss);
    let written = std::fs::read(&up_path).unwrap();
    assert_eq!(written.len(), 50 * MIB);
    assert!(written.iter().take(MIB).enumerate().all(|(i, b)| *b == (i % 251) as u8));
    drop(written);
    std::fs::remove_file(&up_path).unwrap();

    // Download 100 MiB (a sparse file: envd still reads and sends every byte).
    let down_path = envd.home().join("down.bin");
    std::fs::File::create(&down_path).unwrap().set_len(100 * MIB as u64).unwrap();
    let baseline_down = rss_kib("/proc/self/status");
    let rss = PeakRss::start();
    let began = Instant::now();
    let resp = client
        .get(format!("http://{proxy}/files"))
        .query(&[("path", down_path.to_str().unwrap())])
        .header("x-access-token", "tok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0usize;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len();
    }
    let down_time = began.elapsed();
    let down_peak = rss.peak();
    drop(rss);
    assert_eq!(received, 100 * MIB);

    eprintln!(
        "upload 50 MiB in {up_time:?}: RSS {baseline} -> peak {up_peak} KiB; \
         download 100 MiB in {down_time:?}: RSS {baseline_down} -> peak {down_peak} KiB"
    );
    assert!(up_peak.saturating_sub(baseline) < MAX_GROWTH_KIB, "upload grew RSS by {} KiB", up_peak - baseline);
    assert!(
        down_peak.saturating_sub(baseline_down) < MAX_GROWTH_KIB,
        "download grew RSS by {} KiB",
        down_peak - baseline_down
    );
    assert!(resolver.activity_count("big") >= 4);
}
