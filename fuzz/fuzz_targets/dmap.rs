//! DMAP metadata (`application/x-dmap-tagged` bodies): the parser and the now-playing
//! state it updates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use raopd::control::dmap;
use raopd::control::now_playing::NowPlaying;

fuzz_target!(|data: &[u8]| {
    let parsed = dmap::parse(data);
    let mut np = NowPlaying::new();
    let applied = np.apply_dmap(data);
    assert_eq!(parsed.is_ok(), applied.is_ok());
    let _ = np.summary();
});
