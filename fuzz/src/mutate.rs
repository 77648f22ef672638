//! Mutations of an input: bit flips, interesting bytes and numbers,
//! insertions, deletions, copies, splices with another seed, and tokens
//! of the target's own language.

/// xorshift64*: enough randomness for mutations, and a run repeats from
/// its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The longest input a mutation makes.
const MAX_LEN: usize = 64 << 10;

const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\"\\{}[],:\n\r\t -=;./%\x0b";

const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"255",
    b"256",
    b"65535",
    b"4294967295",
    b"4294967296",
    b"9007199254740993",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"1e308",
    b"1e309",
    b"0.5",
    b"NaN",
];

/// Tokens of a target's input language.
fn dictionary(target: &str) -> &'static [&'static [u8]] {
    match target {
        "manifest" => &[
            b"[[routes]]\n",
            b"[[rooms]]\n",
            b"[grants]\n",
            b"[limits]\n",
            b"[env]\n",
            b"prefix = \"/",
            b"protocol = \"yjs\"\n",
            b"protocol = \"livestore\"\n",
            b"protocol = \"text\"\n",
            b"auth = \"required\"\n",
            b"kv = [\"",
            b"outbound = [\"",
            b"memory_mib = ",
            b"cpu_ms = ",
            b"instance_reuse = ",
            b"methods = [\"GET\"]\n",
            b"component = \"",
            b"\"\"\"",
            b"'''",
            b"\\u0000",
            b"[quotas.q]\n",
        ],
        "text_room" => &[
            b"{\"type\":\"insert\",\"position\":",
            b"{\"type\":\"delete\",\"position\":",
            b"{\"type\":\"replace\",\"position\":",
            b",\"length\":",
            b",\"content\":\"",
            b",\"seq\":",
            b"\\ud800",
            b"\\udc00",
            b"\xf0\x9f\x98\x80",
            b"\xc3\xa9",
            b"}\n",
        ],
        "room_log" => &[
            b"{\"type\":\"op\",\"seq\":",
            b"\"steps\":[",
            b"\"insert\"",
            b"\"delete\"",
        ],
        "livestore" => &[
            b"{\"_tag\":\"Request\",\"id\":\"1\",\"tag\":\"SyncWsRpc.Push\",\"payload\":",
            b"{\"_tag\":\"Request\",\"id\":\"1\",\"tag\":\"SyncWsRpc.Pull\",\"payload\":",
            b"{\"_tag\":\"WSMessage.PushReq\",\"requestId\":\"r\",\"batch\":[",
            b"{\"_tag\":\"WSMessage.PullReq\",\"requestId\":\"r\",\"cursor\":",
            b"\"seqNum\":",
            b"\"parentSeqNum\":",
            b"\"backendId\":",
            b"{\"_tag\":\"None\"}",
            b"{\"_tag\":\"Some\",\"value\":",
            b"\"args\":",
            b"\"storeId\":\"s\"",
            b"{\"_tag\":\"Interrupt\",\"requestId\":\"1\"}",
            b"{\"_tag\":\"Ping\"}",
        ],
        "token" => &[
            b"Bearer ",
            b"bearer ",
            b"__session=",
            b"; ",
            b"\"",
            b"eyJhbGciOiJIUzI1NiJ9.",
            b"\xff",
        ],
        "range" => &[
            b"bytes=",
            b"-",
            b",",
            b" ",
            b"items=",
            b"bytes=-0",
            b"bytes=0-",
        ],
        "yjs" => &[
            b"\x00\x00",
            b"\x00\x01",
            b"\x00\x02",
            b"\x01",
            b"\x03",
            b"\xff",
        ],
        "http-token" => &[
            b"authorization: Bearer ",
            b"cookie: __session=",
            b".",
            b"eyJ",
            b"%00",
        ],
        "http-transpile" => &[
            b"{\"code\":\"",
            b"\"files\":{\"",
            b"\"entry\":\"",
            b"\"loader\":\"tsx\"",
            b"\"jsx\":\"automatic\"",
            b"\"sourcemap\":\"inline\"",
            b"\"minify\":true",
            b"\"import_map\":true",
            b"<div>",
            b"</div>",
            b"(((",
            b"import x from \"",
            b"export ",
            b"content-type: application/json",
            b"/transpile/esm",
        ],
        "http-admin" => &[
            b"/_spike/plugins",
            b"/_spike/plugins/hello",
            b"/rollback",
            b"/logs?follow=1",
            b"/_spike/kv/",
            b"?limit=",
            b"&cursor=",
            b"POST ",
            b"DELETE ",
            b"PUT ",
        ],
        "http-paths" | "http-range" => &[
            b"%2F",
            b"%2e%2e",
            b"%00",
            b"%ff",
            b"../",
            b"//",
            b"?",
            b"#",
            b"/site/",
            b"/hello/files/",
            b"range: bytes=",
            b"if-none-match: ",
            b"accept-encoding: br, gzip",
            b"host: ",
        ],
        _ => &[],
    }
}

/// A mutation of one of `corpus`'s inputs: one to four changes.
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], target: &str) -> Vec<u8> {
    let mut input = rng.pick(corpus).clone();
    let dictionary = dictionary(target);
    for _ in 0..=rng.below(4) {
        change(rng, &mut input, corpus, dictionary);
    }
    input.truncate(MAX_LEN);
    input
}

fn change(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    let at = rng.below(input.len() + 1);
    match rng.below(9) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = *rng.pick(BYTES);
        }
        2 => {
            let bytes: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if !input.is_empty() => {
            let end = (at + 1 + rng.below(16)).min(input.len());
            input.drain(at.min(end)..end);
        }
        4 if !input.is_empty() => {
            // A copy of a part, elsewhere (or many: nesting, repetition).
            let from = rng.below(input.len());
            let end = (from + 1 + rng.below(64)).min(input.len());
            let part = input[from..end].to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(input.len() + 1);
                input.splice(at..at, part.iter().copied());
            }
        }
        5 => {
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(256)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
        }
        6 if !dictionary.is_empty() => {
            let token = rng.pick(dictionary);
            input.splice(at..at, token.iter().copied());
        }
        7 => replace_number(rng, input),
        _ => {
            let end = (at + rng.below(4)).min(input.len());
            input.splice(at..end, rng.pick(NUMBERS).iter().copied());
        }
    }
}

/// Replaces a run of digits with an interesting number.
fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let start = *rng.pick(&starts);
    let end = (start..input.len())
        .find(|&i| !input[i].is_ascii_digit())
        .unwrap_or(input.len());
    input.splice(start..end, rng.pick(NUMBERS).iter().copied());
}
