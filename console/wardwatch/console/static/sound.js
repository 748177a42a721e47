// Audible alarm tones by priority (WebAudio) and browser notifications, with a mute that expires by itself.
// A new high-priority alarm always breaks through the mute.

const PATTERNS = {
  // IEC 60601-1-8-like bursts: high = 3+2 fast pulses, medium = 3 slower pulses, low/technical = 1 pulse.
  high: { freq: 880, pulses: [0, 0.2, 0.4, 0.9, 1.1], length: 0.15, repeat_s: 8 },
  medium: { freq: 660, pulses: [0, 0.3, 0.6], length: 0.2, repeat_s: 20 },
  technical: { freq: 520, pulses: [0, 0.35], length: 0.2, repeat_s: 0 },
  low: { freq: 440, pulses: [0], length: 0.25, repeat_s: 0 },
};

export const MUTE_S = 120;

let context = null;
let mutedUntil = 0;
let onMuteChange = () => {};
const lastPlayed = new Map(); // level -> time

export function enableAudio() {
  // Called from a user gesture (login, a click): browsers allow audio only after one.
  const AudioContextClass = window.AudioContext || window.webkitAudioContext;
  if (!AudioContextClass) return;
  if (context === null) context = new AudioContextClass();
  if (context.state === "suspended") context.resume();
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
}

export function audioReady() {
  return context !== null && context.state === "running";
}

export function isMuted() {
  return Date.now() < mutedUntil;
}

export function mutedFor() {
  return Math.max(0, Math.ceil((mutedUntil - Date.now()) / 1000));
}

export function mute(seconds = MUTE_S) {
  mutedUntil = Date.now() + seconds * 1000;
  onMuteChange();
}

export function unmute() {
  mutedUntil = 0;
  onMuteChange();
}

export function whenMuteChanges(callback) {
  onMuteChange = callback;
}

function tone(level) {
  const pattern = PATTERNS[level] || PATTERNS.low;
  if (context === null) return false;
  const start = context.currentTime + 0.02;
  for (const offset of pattern.pulses) {
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = pattern.freq;
    gain.gain.setValueAtTime(0, start + offset);
    gain.gain.linearRampToValueAtTime(0.3, start + offset + 0.01);
    gain.gain.setValueAtTime(0.3, start + offset + pattern.length - 0.02);
    gain.gain.linearRampToValueAtTime(0, start + offset + pattern.length);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + pattern.length + 0.01);
  }
  lastPlayed.set(level, Date.now());
  return true;
}

function notify(alarm, level) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const notification = new Notification(`${level.toUpperCase()} alarm: ${alarm.patient}`, {
      body: alarm.text || alarm.rule,
      tag: alarm.alarm_id,
      requireInteraction: level === "high",
    });
    notification.onclick = () => {
      window.focus();
      window.location.hash = `#/patient/${encodeURIComponent(alarm.patient)}`;
    };
  } catch (error) {
    // Some platforms allow notifications only from a service worker: the tone and the board still alarm.
  }
}

// A new (or re-activated) alarm: sound and notify, unless muted; a high alarm breaks through a mute.
export function announceAlarm(alarm, level) {
  if (level === "high" && isMuted()) unmute();
  if (isMuted()) return;
  tone(level);
  notify(alarm, level);
}

// Called every second with the highest level still active and unacknowledged: repeat its tone.
export function remind(level) {
  const pattern = PATTERNS[level];
  if (!pattern || !pattern.repeat_s || isMuted()) return;
  const last = lastPlayed.get(level) || 0;
  if (Date.now() - last >= pattern.repeat_s * 1000) tone(level);
}
