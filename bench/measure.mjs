// One timed run: wall time, CPU time, peak RSS and what was read from the
// disk (GNU time), how busy the
// cores were over the run (sampled from /proc) and how much CPU the rest of
// the machine took meanwhile (the cores here are shared, so that is noise).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';

const TIME = '/usr/bin/time';
const SAMPLE_MS = 250;
const HEARTBEAT_MS = 30_000;
const CLOCK_TICKS = 100; // USER_HZ, what /proc reports CPU times in, on every Linux
const BLOCK = 512; // the unit of getrusage's ru_inblock (GNU time's %I) on Linux

/** Busy CPU time of the whole machine so far, in seconds, from /proc/stat. */
function machineBusySeconds() {
  const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = cpu;
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

/** utime + stime (ticks) of `/proc/<pid>/…/stat` text; the comm field may hold spaces. */
function statTicks(text) {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function readOr(file, fallback) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback; // the process or thread has just exited
  }
}

/**
 * Samples the process GNU time runs (`timePid`'s child: narcache's node,
 * nix, zstd, xz or a shell): its CPU ticks over time and, per thread name,
 * the ticks each thread had when last seen.
 */
function cpuSampler(timePid) {
  const samples = [];
  const threads = new Map(); // tid → { name, ticks }
  let pid;
  const sample = () => {
    pid ??= Number(readOr(`/proc/${timePid}/task/${timePid}/children`, '').trim().split(' ')[0]) || undefined;
    if (!pid) return;
    const stat = readOr(`/proc/${pid}/stat`, null);
    if (stat === null) return;
    samples.push({ t: performance.now(), ticks: statTicks(stat), machine: machineBusySeconds() });
    let tids = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {}
    for (const tid of tids) {
      const t = readOr(`/proc/${pid}/task/${tid}/stat`, null);
      if (t === null) continue;
      threads.set(tid, { name: t.slice(t.indexOf('(') + 1, t.lastIndexOf(')')), ticks: statTicks(t) });
    }
  };
  const timer = setInterval(sample, SAMPLE_MS);
  return {
    samples,
    /** Cores busy (average) over the last `ms`. */
    recentBusy(ms) {
      const last = samples.at(-1);
      const first = samples.findLast((s) => s.t <= last.t - ms) ?? samples[0];
      return last && last.t > first.t ? (last.ticks - first.ticks) / CLOCK_TICKS / ((last.t - first.t) / 1000) : 0;
    },
    stop() {
      clearInterval(timer);
      const byName = new Map();
      for (const { name, ticks } of threads.values()) {
        const e = byName.get(name) ?? { name, threads: 0, cpuSeconds: 0 };
        e.threads++;
        e.cpuSeconds += ticks / CLOCK_TICKS;
        byName.set(name, e);
      }
      return [...byName.values()].sort((a, b) => b.cpuSeconds - a.cpuSeconds);
    },
  };
}

/**
 * The sampled CPU use as cores busy per interval, the run's and the rest
 * of the machine's: the time the run spent with at least half a core idle
 * while the others left it free, and both cut into `buckets` equal slices
 * (for sparklines).
 */
export function utilisation(samples, cores, buckets = 40) {
  if (samples.length < 2) return null;
  const busy = [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    const dt = (b.t - a.t) / 1000;
    const own = (b.ticks - a.ticks) / CLOCK_TICKS / dt;
    busy.push({ t: (b.t - samples[0].t) / 1000, dt, own, others: Math.max(0, (b.machine - a.machine) / dt - own) });
  }
  const span = busy.at(-1).t;
  buckets = Math.max(1, Math.min(buckets, Math.floor(busy.length / 2))); // never thinner than two samples
  const slices = (key) =>
    Array.from({ length: buckets }, (_, k) => {
      const inSlice = busy.filter((b) => b.t > (k * span) / buckets && b.t <= ((k + 1) * span) / buckets);
      const time = inSlice.reduce((s, b) => s + b.dt, 0);
      return time ? inSlice.reduce((s, b) => s + b[key] * b.dt, 0) / time : null;
    });
  return {
    sampledSeconds: span,
    underusedSeconds: busy.filter((b) => b.own < cores - 0.5 && b.own + b.others < cores - 0.5).reduce((s, b) => s + b.dt, 0),
    slices: slices('own'),
    othersSlices: slices('others'),
  };
}

/**
 * Runs `argv` under GNU time. stdout goes to `stdoutFile` if given, is
 * returned if `captureStdout`, else goes with stderr to `logFile`. `onHeartbeat(elapsedSeconds,
 * coresBusyLately)` is called every 30 s.
 */
export function measure(argv, { env, cwd, logFile, stdoutFile, captureStdout = false, onHeartbeat }) {
  const timeFile = `${logFile}.time`;
  const log = fs.openSync(logFile, 'w');
  const stdout = stdoutFile ? fs.openSync(stdoutFile, 'w') : log;
  const busyBefore = machineBusySeconds();
  const started = performance.now();
  const child = spawn(TIME, ['-f', '%e %U %S %M %I', '-o', timeFile, ...argv], {
    env,
    cwd,
    stdio: ['ignore', captureStdout ? 'pipe' : stdout, log],
  });
  const sampler = cpuSampler(child.pid);
  const heartbeat = setInterval(
    () => onHeartbeat?.((performance.now() - started) / 1000, sampler.recentBusy(HEARTBEAT_MS)),
    HEARTBEAT_MS,
  );
  const out = [];
  child.stdout?.on('data', (b) => out.push(b));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', async (code, signal) => {
      const wallSeconds = (performance.now() - started) / 1000;
      const busyAfter = machineBusySeconds();
      clearInterval(heartbeat);
      const threads = sampler.stop();
      fs.closeSync(log);
      if (stdout !== log) fs.closeSync(stdout);
      // GNU time's last line is ours; a line before it may say the command failed.
      const timeLine = (await fsp.readFile(timeFile, 'utf8').catch(() => '')).trim().split('\n').pop() ?? '';
      const [, user, sys, maxKiB, inBlocks] = timeLine.split(' ').map(Number);
      const cpuSeconds = user + sys;
      resolve({
        code,
        signal,
        wallSeconds,
        cpuSeconds,
        peakRssMiB: maxKiB / 1024,
        // Reads the page cache did not serve: a pass reads its input first (warm in run.mjs) but the cold rows'.
        diskReadMiB: (inBlocks * BLOCK) / 2 ** 20,
        otherCpuSeconds: Math.max(0, busyAfter - busyBefore - cpuSeconds),
        samples: sampler.samples,
        threads,
        stdout: Buffer.concat(out).toString('utf8'),
      });
    });
  });
}
