import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

export interface RateLimitOptions {
  windowMs: number;
  maxRequests: number;
  keyFor?: (req: IncomingMessage) => string;
}

interface Bucket {
  count: number;
  resetAt: number;
}

const DEFAULT_WINDOW_MS = 60_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly windowMs: number;
  private readonly maxRequests: number;
  private readonly keyFor: (req: IncomingMessage) => string;

  constructor(options: Partial<RateLimitOptions> = {}) {
    this.windowMs = options.windowMs ?? DEFAULT_WINDOW_MS;
    this.maxRequests = options.maxRequests ?? 100;
    this.keyFor = options.keyFor ?? ((req) => req.socket.remoteAddress ?? "unknown");
  }

  /** Returns true when the request may proceed, false when it must be rejected. */
  allow(req: IncomingMessage, now: number = Date.now()): boolean {
    const key = createHash("sha256").update(this.keyFor(req)).digest("hex").slice(0, 16);
    let bucket = this.buckets.get(key);
    if (!bucket || bucket.resetAt <= now) {
      bucket = { count: 0, resetAt: now + this.windowMs };
      this.buckets.set(key, bucket);
    }
    bucket.count += 1;
    return bucket.count <= this.maxRequests;
  }

  middleware() {
    return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
      if (this.allow(req)) {
        next();
        return;
      }
      const retryAfter = Math.ceil(this.windowMs / 1000);
      res.writeHead(429, {
        "content-type": "application/json",
        "retry-after": String(retryAfter),
      });
      res.end(JSON.stringify({ error: { type: "rate_limit_error", message: `Too many requests; retry in ${retryAfter}s` } }));
    };
  }

  prune(now: number = Date.now()): number {
    let removed = 0;
    for (const [key, bucket] of this.buckets) {
      if (bucket.resetAt <= now) {
        this.buckets.delete(key);
        removed++;
      }
    }
    return removed;
  }
}
