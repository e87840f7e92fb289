// Types of wsserver.js, the client library of wsserver.

/** A user id: a string, or a number (whole, from 1; beyond 2^53 use a string). */
export type UserId = string | number;

export interface ConnectOptions {
  /** ws(s)://host:port/chat; an http(s) url, or a path on the page's host, works too. */
  url: string;
  /** The user to connect as (sent as ?id=); null when a jwt's sub gives it. */
  id?: UserId | null;
  /** Sent as the query parameter token (a jwt auth with source query). */
  token?: string | null;
  /** Start after this inbox seq (0: the whole inbox); null: the stored one, or live only. */
  since?: number | null;
  /** Where the newest seq seen is kept: this page's memory, or localStorage. */
  storage?: "memory" | "local";
  /** On 4051: a new token (or a Promise of one); null or a rejection stops the client. */
  onTokenExpired?: (() => string | null | Promise<string | null>) | null;

  // Beyond the documented interface: knobs, and what tests inject.
  /** ms before the first reconnect (default 500); doubled per failed attempt. */
  minDelay?: number;
  /** The cap of the backoff, ms (default 30000). */
  maxDelay?: number;
  /** ms online after which the backoff starts over (default 5000). */
  stableAfter?: number;
  /** ms a connection may take to open before it is given up (default 10000). */
  openTimeout?: number;
  /** Messages that may wait for their ack at once (default 1000). */
  maxOutbox?: number;
  WebSocket?: new (url: string) => WebSocket;
  setTimeout?: (f: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
  /** In [0, 1): the jitter. */
  random?: () => number;
  /** Milliseconds, as Date.now. */
  now?: () => number;
  localStorage?: Pick<Storage, "getItem" | "setItem">;
}

/** A message as the server delivers it. */
export interface Message {
  id: string;
  type: string;
  text: string;
  timestamp: string;
  sender: UserId;
  recipients: UserId[];
  data: unknown;
  /** With the server's inbox on (chat.history): per user, only grows. */
  seq?: number;
}

export type Status =
  | { state: "connecting"; code: null; reason: null; attempt: number }
  | { state: "online"; code: null; reason: null; since: number | null }
  | {
      state: "offline";
      code: number;
      reason: string;
      /** ms until the next attempt; null while a new token is asked for (4051). */
      delay: number | null;
      /** It never opened: the handshake was refused (HTTP 403, 429) or the server is down. */
      refused: boolean;
    }
  | { state: "stopped"; code: number | null; reason: string };

/** A notification_received: the message id reached a connection of recipient. */
export interface Delivered {
  id: string;
  recipient: UserId;
}

/** user_online / user_offline messages (from user 0) as an app's backend may forward them. */
export interface Presence {
  user: UserId;
  online: boolean;
}

/** A history_gap: entries after since were dropped; first is the oldest seq kept. */
export interface Gap {
  since: number;
  first: number;
}

export interface EventMap {
  message: Message;
  status: Status;
  delivered: Delivered;
  presence: Presence;
  gap: Gap;
}

/** Why send() was rejected: the client stopped (code, reason), or the outbox is full. */
export class SendError extends Error {
  constructor(message: string, code?: number | null, reason?: string | null);
  /** The close code the client stopped with; null for a send after the stop, or to a full outbox. */
  code: number | null;
  reason: string | null;
}

export class Client {
  readonly url: string;
  readonly id: string | null;
  token: string | null;
  /** The newest inbox seq seen: the next connection resumes after it. */
  readonly lastSeq: number | null;
  readonly state: Status["state"];
  /** Messages sent and not yet acked (offline: the outbox). */
  readonly pending: number;
  constructor(options: ConnectOptions);
  /** Listen; the function returned removes the listener. */
  on<K extends keyof EventMap>(event: K, listener: (value: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(event: K, listener: (value: EventMap[K]) => void): void;
  /** Send type "text"; resolves with the message id on message_ack. */
  send(recipients: UserId[], text: string, data?: unknown): Promise<string>;
  /** Close with 1000; no reconnect; unacked sends are rejected. */
  close(): void;
}

export function connect(options: ConnectOptions): Client;
export default connect;

/** The server version this library came with. */
export const VERSION: string;
