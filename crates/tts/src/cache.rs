//! [`CachedEngine`]: an in-memory LRU of renders, in front of any engine.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use lru::LruCache;

use crate::{Audio, RenderRequest, TtsEngine, TtsError};

/// The default budget: about 70 minutes of 8 kHz audio.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a cache entry is charged beyond its samples and text: the key, the map slot, the
/// list links. An estimate; it keeps a flood of tiny renders from being free.
const ENTRY_OVERHEAD: usize = 128;

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Renders answered from the cache.
    pub hits: u64,
    /// Renders passed to the engine.
    pub misses: u64,
    /// Renders held now.
    pub entries: usize,
    /// Bytes charged against the budget now.
    pub bytes: usize,
}

struct Lru {
    entries: LruCache<RenderRequest, Audio>,
    bytes: usize,
}

/// Wraps an engine so that an identical request (voice, text, length factor) is rendered
/// once and then served from memory, least recently used evicted first once the byte
/// budget is spent.
///
/// The key is the voice *name*: the voice table is fixed for the life of an engine, so a
/// configuration change means a new engine and a new, empty cache. Failures are not cached.
/// Two identical requests that miss at the same moment both render; prompts are short and
/// the second result simply replaces the first.
pub struct CachedEngine<E> {
    inner: E,
    budget: usize,
    // std Mutex: held only for map operations, never across .await.
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<E: TtsEngine> CachedEngine<E> {
    /// A cache of at most `budget_bytes` (see [`DEFAULT_CACHE_BYTES`]) in front of `inner`.
    pub fn new(inner: E, budget_bytes: usize) -> CachedEngine<E> {
        CachedEngine {
            inner,
            budget: budget_bytes,
            lru: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Hit and miss counts since creation, and the current size.
    pub fn stats(&self) -> CacheStats {
        let lru = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: lru.entries.len(),
            bytes: lru.bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters for a cache, so a poisoned lock is used as is.
        self.lru
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn cost(req: &RenderRequest, audio: &Audio) -> usize {
    audio.byte_len() + req.voice.len() + req.text.heap_estimate() + ENTRY_OVERHEAD
}

#[async_trait]
impl<E: TtsEngine> TtsEngine for CachedEngine<E> {
    async fn render(&self, req: &RenderRequest) -> Result<Audio, TtsError> {
        if let Some(audio) = self.lock().entries.get(req).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(audio);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let audio = self.inner.render(req).await?;

        let cost = cost(req, &audio);
        if cost <= self.budget {
            let mut lru = self.lock();
            if let Some(old) = lru.entries.put(req.clone(), audio.clone()) {
                lru.bytes -= self::cost(req, &old);
            }
            lru.bytes += cost;
            while lru.bytes > self.budget {
                let (key, evicted) = lru
                    .entries
                    .pop_lru()
                    .expect("bytes are only counted for entries in the map");
                lru.bytes -= self::cost(&key, &evicted);
            }
        }
        Ok(audio)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::{LengthFactor, SpeechText};

    /// Returns one second of a constant equal to the number of renders so far, so a
    /// re-render is visible.
    #[derive(Default)]
    struct Counting {
        renders: AtomicUsize,
    }

    #[async_trait]
    impl TtsEngine for Counting {
        async fn render(&self, req: &RenderRequest) -> Result<Audio, TtsError> {
            if req.voice == "broken" {
                return Err(TtsError::EmptyOutput);
            }
            let n = self.renders.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Audio::from_samples(vec![n as i16; 8000]))
        }
    }

    fn req(voice: &str, text: &str) -> RenderRequest {
        RenderRequest::new(voice, SpeechText::plain(text))
    }

    #[tokio::test]
    async fn a_repeated_request_is_a_hit_with_identical_audio() {
        let cache = CachedEngine::new(Counting::default(), DEFAULT_CACHE_BYTES);
        let first = cache.render(&req("a", "x")).await.unwrap();
        let second = cache.render(&req("a", "x")).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(cache.inner().renders.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        assert!(stats.bytes >= 16000);
    }

    #[tokio::test]
    async fn voice_text_and_length_factor_each_make_a_different_key() {
        let cache = CachedEngine::new(Counting::default(), DEFAULT_CACHE_BYTES);
        let base = req("a", "x");
        let slower = RenderRequest {
            length_factor: LengthFactor::new(1.5).unwrap(),
            ..base.clone()
        };
        for r in [&base, &req("b", "x"), &req("a", "y"), &slower] {
            cache.render(r).await.unwrap();
        }
        assert_eq!(cache.stats().misses, 4);
        assert_eq!(cache.stats().hits, 0);
    }

    #[tokio::test]
    async fn the_least_recently_used_render_is_evicted_to_stay_in_budget() {
        let one = cost(&req("a", "1"), &Audio::from_samples(vec![0; 8000]));
        let cache = CachedEngine::new(Counting::default(), 2 * one);
        cache.render(&req("a", "1")).await.unwrap();
        cache.render(&req("a", "2")).await.unwrap();
        cache.render(&req("a", "1")).await.unwrap(); // "1" is now the most recent
        cache.render(&req("a", "3")).await.unwrap(); // evicts "2"
        assert_eq!(cache.stats().entries, 2);
        assert!(cache.stats().bytes <= 2 * one);
        cache.render(&req("a", "1")).await.unwrap();
        assert_eq!(cache.stats().hits, 2);
        cache.render(&req("a", "2")).await.unwrap();
        assert_eq!(cache.stats().misses, 4);
    }

    #[tokio::test]
    async fn failures_and_renders_larger_than_the_budget_are_not_kept() {
        let cache = CachedEngine::new(Counting::default(), 1000);
        assert!(cache.render(&req("broken", "x")).await.is_err());
        cache.render(&req("a", "x")).await.unwrap();
        cache.render(&req("a", "x")).await.unwrap();
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.entries, stats.bytes),
            (0, 3, 0, 0)
        );
    }
}
