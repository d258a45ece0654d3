import type { PathInfo } from '../closure';

/**
 * The order narinfos may be published in: a path's narinfo only after its
 * NAR is written and the narinfos of all its references are published, so
 * that the narinfos present always form a closed set. Each path keeps a
 * count of its references not yet published; publishing one counts down
 * only the paths that refer to it. Linear in the size of the closure
 * (paths and references), whatever the order the NARs are finished in.
 */
export class PublishOrder<T> {
  /** For each path still to publish, its references (itself aside) not yet published. */
  private readonly blockers = new Map<string, number>();
  /** The paths still to publish that refer to each path. */
  private readonly referrers = new Map<string, string[]>();
  /** Paths whose NAR is written, with what the caller gave for them. */
  private readonly written = new Map<string, T>();
  /** Written paths whose references are all published. */
  private ready: string[] = [];

  /** `todo`: the paths to publish; any other reference is taken as published already. */
  constructor(todo: Pick<PathInfo, 'path' | 'references'>[]) {
    for (const info of todo) this.blockers.set(info.path, 0);
    for (const info of todo) {
      for (const ref of info.references) {
        if (ref === info.path || !this.blockers.has(ref)) continue;
        this.blockers.set(info.path, this.blockers.get(info.path)! + 1);
        const referrers = this.referrers.get(ref);
        if (referrers) referrers.push(info.path);
        else this.referrers.set(ref, [info.path]);
      }
    }
  }

  /** Written paths not yet taken. */
  get waitingCount(): number {
    return this.written.size;
  }

  /** Whether take() would give any path. */
  get anyReady(): boolean {
    return this.ready.length > 0;
  }

  /** Records that the NAR of `path` is written. */
  add(path: string, value: T): void {
    this.written.set(path, value);
    if (this.blockers.get(path) === 0) this.ready.push(path);
  }

  /**
   * Every written path whose references are published or come before it in
   * the batch, references first. They count as published from now on: the
   * caller publishes the batch in this order before taking the next one.
   */
  take(): [string, T][] {
    const batch: [string, T][] = [];
    for (let i = 0; i < this.ready.length; i++) {
      const path = this.ready[i];
      batch.push([path, this.written.get(path)!]);
      this.written.delete(path);
      this.blockers.delete(path);
      for (const referrer of this.referrers.get(path) ?? []) {
        const left = this.blockers.get(referrer)! - 1;
        this.blockers.set(referrer, left);
        if (left === 0 && this.written.has(referrer)) this.ready.push(referrer);
      }
      this.referrers.delete(path);
    }
    this.ready = [];
    return batch;
  }
}
