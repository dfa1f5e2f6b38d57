// Small DOM helpers shared by the pages. Text always goes in through textContent, never as HTML:
// the page's Content-Security-Policy enforces Trusted Types, so an HTML sink would be refused.

import { ApiError, takeFlash } from "./api.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/** el("p", { class: "meta" }, "text", otherNode) */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Says `text` in the page's status region (role=status), which screen readers announce. */
export function announce(text) {
  const region = $("#status");
  if (!region) return;
  region.textContent = "";
  // A new text node a moment later is announced even when the text repeats.
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** A visible notice at the top of the form or page, also announced. */
export function notice(target, text, kind = "info") {
  const box = typeof target === "string" ? $(target) : target;
  if (!box) return;
  if (!text) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.className = `notice ${kind}`;
  box.textContent = text;
  box.hidden = false;
  announce(text);
}

/** Shows the message another page left for this one (signed out, session ended, ...). */
export function showFlash(target) {
  const flash = takeFlash();
  if (flash) notice(target, flash.text, flash.kind);
  return flash;
}

function errorBoxFor(input) {
  return document.getElementById(`${input.id}-error`);
}

export function clearFieldErrors(form) {
  for (const input of form.querySelectorAll("input")) {
    input.removeAttribute("aria-invalid");
    const box = errorBoxFor(input);
    if (box) {
      box.replaceChildren();
      box.hidden = true;
    }
  }
}

/** Puts each message next to its field, marks the field invalid, and focuses the first one. */
export function showFieldErrors(form, errors) {
  let first = null;
  for (const [name, messages] of Object.entries(errors)) {
    const input = form.elements.namedItem(name);
    if (!(input instanceof HTMLInputElement)) continue;
    const list = (Array.isArray(messages) ? messages : [messages]).filter(Boolean).map(String);
    if (list.length === 0) continue;
    input.setAttribute("aria-invalid", "true");
    const box = errorBoxFor(input);
    if (box) {
      box.replaceChildren(
        list.length === 1 ? el("p", { text: list[0] }) : el("ul", {}, ...list.map((m) => el("li", { text: m }))),
      );
      box.hidden = false;
    }
    first ??= input;
  }
  if (first) {
    first.focus();
    const count = Object.keys(errors).length;
    announce(count > 1 ? "Please correct the highlighted fields." : `${labelOf(first)}: ${Object.values(errors)[0].join(" ")}`);
  }
  return first !== null;
}

function labelOf(input) {
  return input.labels?.[0]?.textContent?.trim() || input.name;
}

/**
 * Runs `work` with `button` disabled and relabelled, and the form marked busy; gives focus back
 * to the button afterwards when it had it, so keyboard users keep their place.
 */
export async function whileBusy(button, busyLabel, work) {
  const form = button.form;
  const label = button.textContent;
  const hadFocus = document.activeElement === button;
  const buttons = form ? [...form.querySelectorAll("button")] : [button];
  for (const b of buttons) b.disabled = true;
  button.textContent = busyLabel;
  form?.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    for (const b of buttons) b.disabled = false;
    button.textContent = label;
    form?.removeAttribute("aria-busy");
    if (hadFocus && (document.activeElement === document.body || document.activeElement === null)) button.focus();
  }
}

/** Plain words for an API error that is not about a particular field. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return "Something went wrong in this page. Reload it and try again.";
  const wait = error.retryAfter !== null ? ` Try again in ${duration(error.retryAfter)}.` : " Try again in a moment.";
  switch (error.code) {
    case "network":
      return "Could not reach Latchkey. Check your connection and try again.";
    case "too_many_requests":
      return `Too many attempts.${wait}`;
    case "overloaded":
      return `Latchkey is busy right now.${wait}`;
    case "unavailable":
      return `Latchkey is temporarily unavailable.${wait}`;
    case "payload_too_large":
      return "What you entered is too long.";
    case "invalid_credentials":
      return "The email or password is incorrect.";
    case "wrong_password":
      return "That password is not correct.";
    case "email_taken":
      return "An account with this email already exists.";
    case "forbidden_origin":
      return "This page is not allowed to use your sign-in. Open Latchkey from its own address.";
    case "not_found":
      return "That no longer exists.";
    case "invalid_link":
      return "This link does not work any more: it was already used, has expired, or a newer one was sent.";
    case "email_unverified":
      return "Verify your email address first: open the link we mailed you.";
    default:
      if (error.status >= 500) {
        const ref = error.requestId ? ` (reference ${error.requestId})` : "";
        return `Something went wrong on our side${ref}. Please try again.`;
      }
      return "That did not work. Please try again.";
  }
}

function duration(seconds) {
  if (seconds < 60) return seconds === 1 ? "1 second" : `${seconds} seconds`;
  const minutes = Math.ceil(seconds / 60);
  return minutes === 1 ? "1 minute" : `${minutes} minutes`;
}

/** Show/hide buttons for password fields: <button type="button" data-reveal="input-id">. */
export function wireRevealButtons(root = document) {
  for (const button of root.querySelectorAll("button[data-reveal]")) {
    const input = document.getElementById(button.dataset.reveal);
    if (!input) continue;
    const set = (visible) => {
      input.type = visible ? "text" : "password";
      button.textContent = visible ? "Hide" : "Show";
      button.setAttribute("aria-label", visible ? "Hide password" : "Show password");
    };
    button.addEventListener("click", () => set(input.type === "password"));
    // Never leave a password visible in a form that is being submitted.
    input.form?.addEventListener("submit", () => set(false));
  }
}

/** The number of code points after NFKC, as the server counts a password's length. */
export function passwordLength(password) {
  return [...password.normalize("NFKC")].length;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "long" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** <time> with a relative text ("3 minutes ago") and the exact time as its tooltip. */
export function timeElement(iso, { dateOnly: onlyDate = false } = {}) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return el("span", { text: "unknown time" });
  const text = onlyDate ? dateOnly.format(date) : relativeText(date);
  return el("time", { datetime: date.toISOString(), title: dateTime.format(date), text });
}

function relativeText(date) {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86_400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86_400) return relative.format(Math.round(seconds / 86_400), "day");
  return dateTime.format(date);
}

/** "Chrome on Linux" from a User-Agent header; programs are named by their product token. */
export function describeAgent(userAgent) {
  const ua = (userAgent || "").trim();
  if (!ua) return "Unknown device";
  const browser =
    (/\bEdg(?:e|A|iOS)?\//.test(ua) && "Edge") ||
    (/\b(?:OPR|Opera)\//.test(ua) && "Opera") ||
    (/\b(?:Firefox|FxiOS)\//.test(ua) && "Firefox") ||
    (/\b(?:Chrome|Chromium|CriOS|HeadlessChrome)\//.test(ua) && "Chrome") ||
    (/\bVersion\/[\d.]+.*Safari\//.test(ua) && "Safari") ||
    null;
  const system =
    (/\bWindows\b/.test(ua) && "Windows") ||
    (/\bAndroid\b/.test(ua) && "Android") ||
    (/\b(?:iPhone|iPod)\b/.test(ua) && "iPhone") ||
    (/\biPad\b/.test(ua) && "iPad") ||
    (/\bCrOS\b/.test(ua) && "ChromeOS") ||
    (/\bMac OS X\b|\bMacintosh\b/.test(ua) && "macOS") ||
    (/\bLinux\b/.test(ua) && "Linux") ||
    null;
  if (browser && system) return `${browser} on ${system}`;
  if (browser) return browser;
  const product = ua.split(/\s+/)[0].slice(0, 40);
  return system ? `${product} on ${system}` : product;
}
