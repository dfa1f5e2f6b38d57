// The account page: who you are, where you are signed in, your recent security activity, and
// the actions on them. It signs in through the refresh cookie on load; without a session it
// sends the person to the sign-in page.

import * as api from "./api.js";
import { ApiError, SessionEnded } from "./api.js";
import {
  $,
  announce,
  clearFieldErrors,
  describeAgent,
  describeError,
  el,
  notice,
  passwordLength,
  showFieldErrors,
  showFlash,
  timeElement,
  whileBusy,
  wireRevealButtons,
} from "./ui.js";

const EVENT_LABELS = {
  registered: "Account created",
  login_succeeded: "Signed in",
  login_failed: "Failed sign-in attempt",
  refreshed_reuse_detected: "A stolen or replayed sign-in was detected; that session was ended",
  logged_out: "Signed out",
  session_revoked: "A session was signed out",
  password_changed: "Password changed",
  email_verified: "Email address verified",
  password_reset_requested: "Password reset link requested",
  password_reset: "Password reset through an emailed link",
  account_deleted: "Account deleted",
};
const WARNING_EVENTS = new Set(["login_failed", "refreshed_reuse_detected"]);

let user = null;

// Once the session is over nothing on this page can work: stop people from trying.
api.onSessionEnd(() => {
  for (const button of document.querySelectorAll("button")) button.disabled = true;
});

/** Runs an API call; a SessionEnded error means the page is already leaving. */
async function attempt(work, onError) {
  try {
    return await work();
  } catch (error) {
    if (error instanceof SessionEnded) return undefined;
    onError(error);
    return undefined;
  }
}

/**
 * A section's notice says either why its list could not load, or how an action went. Reloading
 * the list clears only the former, so "Signed out Chrome on Linux." stays after the list updates.
 */
function sectionNotice(id, text, kind, source) {
  const box = $(id);
  notice(box, text, kind);
  box.dataset.source = source;
}

function clearLoadNotice(id) {
  const box = $(id);
  if (box.dataset.source === "load") notice(box, "");
}

// ---- profile ---------------------------------------------------------------------------------

function showUser(me) {
  user = me;
  $("#who").textContent = me.email;
  $("#profile-email").textContent = me.email;
  $("#profile-created").replaceChildren(timeElement(me.created_at, { dateOnly: true }));
  $("#delete-email").textContent = me.email;
  $("#password-username").value = me.email;
  $("#delete-username").value = me.email;
  // Absent while the service does not verify addresses: only an explicit false shows it.
  $("#verify-banner").hidden = me.email_verified !== false;
}

$("#verify-resend").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (!user) return;
  await whileBusy(button, "Sending…", async () => {
    try {
      await api.resendVerification(user.email);
      $("#verify-banner-text").textContent = `A new link is on its way to ${user.email}. Open it to verify your address.`;
      announce("A new verification link was sent.");
    } catch (error) {
      $("#verify-banner-text").textContent = describeError(error);
      announce(describeError(error));
    }
  });
});

// ---- sessions --------------------------------------------------------------------------------

async function loadSessions() {
  const list = $("#sessions");
  $("#sessions-loading").hidden = false;
  await attempt(
    async () => {
      const data = await api.authed("GET", "/sessions");
      renderSessions(data?.sessions ?? []);
      clearLoadNotice("#sessions-notice");
    },
    (error) => {
      list.replaceChildren();
      sectionNotice(
        "#sessions-notice",
        error instanceof ApiError && error.status === 404
          ? "The list of sessions is not available on this server yet."
          : `Could not load your sessions. ${describeError(error)}`,
        "error",
        "load",
      );
    },
  );
  $("#sessions-loading").hidden = true;
}

function renderSessions(sessions) {
  const ordered = [...sessions].sort((a, b) => Number(Boolean(b.current)) - Number(Boolean(a.current)));
  const items = ordered.map((session) => {
    const device = describeAgent(session.user_agent);
    const title = el("div", { class: "title" }, device);
    if (session.current) title.append(el("span", { class: "badge", text: "This device" }));
    const meta = el(
      "p",
      { class: "meta" },
      "Signed in ",
      timeElement(session.created_at),
      " · last active ",
      timeElement(session.last_used_at ?? session.created_at),
      session.ip ? ` · IP ${session.ip}` : "",
    );
    const item = el("li", { "data-session-id": session.id, "data-current": session.current ? "true" : "false" }, el("div", { class: "what" }, title, meta));
    if (!session.current) {
      const button = el("button", {
        type: "button",
        class: "subtle",
        text: "Sign out",
        // Two sessions of one browser can start in the same second: the address tells them apart.
        "aria-label": `Sign out ${device}, signed in ${new Date(session.created_at).toLocaleString()}${session.ip ? `, IP ${session.ip}` : ""}`,
      });
      button.addEventListener("click", () => revokeSession(session, device, button));
      item.append(button);
    }
    return item;
  });
  $("#sessions").replaceChildren(...items);
  $("#sign-out-others").disabled = ordered.every((s) => s.current);
  if (items.length === 0) $("#sessions").append(el("li", { class: "empty", text: "No sessions." }));
}

async function revokeSession(session, device, button) {
  await whileBusy(button, "Signing out…", () =>
    attempt(
      async () => {
        await api.authed("DELETE", `/sessions/${encodeURIComponent(session.id)}`);
        sectionNotice("#sessions-notice", `Signed out ${device}.`, "ok", "action");
      },
      (error) => {
        const gone = error instanceof ApiError && error.status === 404;
        sectionNotice("#sessions-notice", gone ? "That session had already ended." : describeError(error), gone ? "info" : "error", "action");
      },
    ),
  );
  await Promise.all([loadSessions(), loadEvents()]);
  $("#sessions-title").focus();
}

/** "Sign out everywhere else" asks first: it ends sessions on devices the person may not have at hand. */
function wireOthersDialog() {
  const dialog = $("#others-dialog");
  const opener = $("#sign-out-others");
  opener.addEventListener("click", () => {
    const others = document.querySelectorAll('#sessions > li[data-current="false"]').length;
    $("#others-count").textContent = others === 1 ? "1 other session" : `${others} other sessions`;
    dialog.showModal();
    // Cancel is the safe choice, so Enter right away changes nothing.
    $("#others-cancel").focus();
  });
  $("#others-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => opener.focus());
  $("#others-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    dialog.close();
    await signOutOthers(opener);
    // With no other session left the button is disabled: keep focus on the section instead.
    (opener.disabled ? $("#sessions-title") : opener).focus();
  });
}

async function signOutOthers(button) {
  await whileBusy(button, "Signing out…", () =>
    attempt(
      async () => {
        await api.authed("DELETE", "/sessions");
        sectionNotice("#sessions-notice", "Signed out everywhere else. Only this device is signed in now.", "ok", "action");
      },
      (error) => sectionNotice("#sessions-notice", describeError(error), "error", "action"),
    ),
  );
  await Promise.all([loadSessions(), loadEvents()]);
}

// ---- security activity ------------------------------------------------------------------------

async function loadEvents() {
  const list = $("#events");
  $("#events-loading").hidden = false;
  await attempt(
    async () => {
      const data = await api.authed("GET", "/me/events");
      renderEvents(data?.events ?? []);
      clearLoadNotice("#events-notice");
    },
    (error) => {
      list.replaceChildren();
      sectionNotice(
        "#events-notice",
        error instanceof ApiError && error.status === 404
          ? "Security activity is not available on this server yet."
          : `Could not load your security activity. ${describeError(error)}`,
        "error",
        "load",
      );
    },
  );
  $("#events-loading").hidden = true;
}

function renderEvents(events) {
  const items = events.map((event) => {
    const label = EVENT_LABELS[event.type] ?? String(event.type || "Activity").replaceAll("_", " ");
    const title = el("div", { class: "title" }, label);
    if (WARNING_EVENTS.has(event.type)) title.append(el("span", { class: "badge warn", text: "Check this" }));
    const meta = el(
      "p",
      { class: "meta" },
      timeElement(event.at),
      event.user_agent ? ` · ${describeAgent(event.user_agent)}` : "",
      event.ip ? ` · IP ${event.ip}` : "",
    );
    return el("li", { "data-event": event.type }, el("div", { class: "what" }, title, meta));
  });
  if (items.length === 0) items.push(el("li", { class: "empty", text: "No activity yet." }));
  $("#events").replaceChildren(...items);
}

// ---- change password --------------------------------------------------------------------------

/** The server may name the new password `new_password` or `password`; both belong to one field. */
function passwordFieldErrors(errors) {
  const mapped = {};
  for (const [name, messages] of Object.entries(errors)) {
    mapped[name === "password" ? "new_password" : name] = messages;
  }
  return mapped;
}

async function changePassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (form.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(form);
  notice("#password-form-notice", "");
  const current = form.elements.current_password.value;
  const next = form.elements.new_password.value;
  const problems = {};
  if (!current) problems.current_password = ["Enter your current password."];
  if (!next) problems.new_password = ["Choose a new password."];
  else if (passwordLength(next) < 8) problems.new_password = ["Use at least 8 characters."];
  if (showFieldErrors(form, problems)) return;

  const submit = form.querySelector('button[type="submit"]');
  let changed = false;
  await whileBusy(submit, "Changing…", () =>
    attempt(
      async () => {
        await api.authed("POST", "/me/password", { current_password: current, new_password: next });
        changed = true;
      },
      (error) => {
        if (error instanceof ApiError && error.code === "wrong_password") {
          showFieldErrors(form, { current_password: ["Your current password is not correct."] });
        } else if (error instanceof ApiError && error.code === "validation_failed") {
          showFieldErrors(form, passwordFieldErrors(error.errors));
        } else if (error instanceof ApiError && error.status === 404) {
          notice("#password-form-notice", "Changing the password is not available on this server yet.", "error");
        } else {
          notice("#password-form-notice", describeError(error), "error");
        }
      },
    ),
  );
  if (changed) {
    form.reset();
    $("#password-username").value = user.email;
    notice("#password-form-notice", "Password changed. Your other sessions have been signed out.", "ok");
    await Promise.all([loadSessions(), loadEvents()]);
  }
}

// ---- delete account ---------------------------------------------------------------------------

function wireDeleteDialog() {
  const dialog = $("#delete-dialog");
  const form = $("#delete-form");
  const opener = $("#delete-open");
  opener.addEventListener("click", () => {
    form.reset();
    $("#delete-username").value = user.email;
    clearFieldErrors(form);
    notice("#delete-form-notice", "");
    dialog.showModal();
    $("#delete-password").focus();
  });
  $("#delete-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    form.reset();
    opener.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    clearFieldErrors(form);
    notice("#delete-form-notice", "");
    const password = form.elements.password.value;
    if (showFieldErrors(form, password ? {} : { password: ["Enter your password to confirm."] })) return;
    const submit = form.querySelector('button[type="submit"]');
    let deleted = false;
    await whileBusy(submit, "Deleting…", () =>
      attempt(
        async () => {
          await api.authed("DELETE", "/me", { password });
          deleted = true;
        },
        (error) => {
          if (error instanceof ApiError && error.code === "wrong_password") {
            showFieldErrors(form, { password: ["That password is not correct."] });
          } else if (error instanceof ApiError && error.status === 404) {
            notice("#delete-form-notice", "Deleting an account is not available on this server yet.", "error");
          } else {
            notice("#delete-form-notice", describeError(error), "error");
          }
        },
      ),
    );
    if (deleted) {
      api.signedOutLocally("Your account was deleted in another tab.");
      api.leave("/", "Your account has been deleted.", "ok");
    }
  });
}

// ---- start ------------------------------------------------------------------------------------

async function signOut(button) {
  await whileBusy(button, "Signing out…", () =>
    attempt(
      async () => {
        await api.signOut();
        api.leave("/", "You are signed out.", "ok");
      },
      (error) => notice("#flash", `You are still signed in. ${describeError(error)}`, "error"),
    ),
  );
}

async function start() {
  let me;
  try {
    me = await api.resume();
  } catch (error) {
    $("#loading").hidden = true;
    const again = error instanceof ApiError && error.code === "forbidden_origin" ? "" : " Reload the page to try again.";
    notice("#flash", `${describeError(error)}${again}`, "error");
    return;
  }
  if (!me) {
    api.leave("/", "Please sign in to see your account.", "info");
    return;
  }
  showUser(me);
  showFlash("#flash");
  $("#loading").hidden = true;
  $("#account").hidden = false;
  $("#account-nav").hidden = false;
  announce(`Signed in as ${me.email}.`);

  wireRevealButtons(document);
  $("#sign-out").addEventListener("click", (event) => signOut(event.currentTarget));
  wireOthersDialog();
  $("#sessions-reload").addEventListener("click", (event) => whileBusy(event.currentTarget, "Refreshing…", loadSessions));
  $("#events-reload").addEventListener("click", (event) => whileBusy(event.currentTarget, "Refreshing…", loadEvents));
  $("#password-form").addEventListener("submit", changePassword);
  wireDeleteDialog();

  await Promise.all([loadSessions(), loadEvents()]);
}

start();
