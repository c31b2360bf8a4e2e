//! Routing traces: one JSON object per token and MoE layer, written as JSON Lines.
//!
//! `{"pos":12,"layer":3,"experts":[5,1],"weights":[0.61,0.39]}` — the experts chosen for the
//! token at position `pos` in `layer`, highest weight first. Traces feed `moe-edge simulate`
//! (cache policies against Belady's optimum) and `moe-edge routing-stats` (heatmaps, entropy,
//! co-activation, reuse distance).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::RouteObserver;
use crate::router::Choice;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceRecord {
    pub pos: usize,
    pub layer: usize,
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Writes trace records as they are observed.
pub struct TraceWriter {
    out: BufWriter<File>,
    error: Option<std::io::Error>,
    pub records: u64,
}

impl TraceWriter {
    pub fn create(path: &Path) -> Result<TraceWriter> {
        let f = File::create(path)
            .with_context(|| format!("cannot create trace file {}", path.display()))?;
        Ok(TraceWriter {
            out: BufWriter::new(f),
            error: None,
            records: 0,
        })
    }

    pub fn finish(mut self) -> Result<u64> {
        if let Some(e) = self.error.take() {
            bail!("writing the trace failed: {e}");
        }
        self.out.flush().context("writing the trace failed")?;
        Ok(self.records)
    }
}

impl RouteObserver for TraceWriter {
    fn observe(&mut self, layer: usize, pos: usize, choices: &[Choice]) {
        if self.error.is_some() {
            return;
        }
        let rec = TraceRecord {
            pos,
            layer,
            experts: choices.iter().map(|c| c.expert).collect(),
            weights: choices.iter().map(|c| c.weight).collect(),
        };
        let line = serde_json::to_string(&rec).expect("plain record serializes");
        if let Err(e) = writeln!(self.out, "{line}") {
            self.error = Some(e);
        }
        self.records += 1;
    }
}

/// Reads a trace; errors name the file and line.
pub fn read_trace(path: &Path) -> Result<Vec<TraceRecord>> {
    let f = File::open(path).with_context(|| format!("cannot open trace {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: TraceRecord = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a routing trace record", path.display(), i + 1))?;
        if rec.experts.len() != rec.weights.len() {
            bail!(
                "{}:{}: experts and weights differ in length",
                path.display(),
                i + 1
            );
        }
        out.push(rec);
    }
    Ok(out)
}
