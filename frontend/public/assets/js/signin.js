// The sign-in page. A person who is still signed in (the refresh cookie works) goes straight to
// the account page; everyone else gets the form.

import { ApiError, probablySignedIn, resendVerification, resume, signIn } from "./api.js";
import { $, announce, clearFieldErrors, describeError, notice, showFieldErrors, showFlash, whileBusy, wireRevealButtons } from "./ui.js";

const form = $("#signin-form");
const submit = form.querySelector('button[type="submit"]');
wireRevealButtons(form);

const unverified = $("#unverified");
const resend = $("#resend-verification");
resend.addEventListener("click", async () => {
  const email = form.elements.email.value.trim();
  if (showFieldErrors(form, email ? {} : { email: ["Enter your email address."] })) return;
  await whileBusy(resend, "Sending…", async () => {
    try {
      await resendVerification(email);
      notice("#form-error", `If ${email} has an account waiting for verification, a new link is on its way.`, "ok");
    } catch (error) {
      notice("#form-error", describeError(error), "error");
    }
  });
});

const flash = showFlash("#flash");
// Arriving with a message (signed out, session ended) means the cookie is gone: do not try it.
if (!flash && probablySignedIn()) {
  resume()
    .then((user) => {
      if (user) window.location.replace("/account/");
    })
    .catch(() => {
      // The server could not be reached: the form is still here.
    });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(form);
  notice("#form-error", "");
  unverified.hidden = true;
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  const missing = {};
  if (!email) missing.email = ["Enter your email address."];
  if (!password) missing.password = ["Enter your password."];
  if (showFieldErrors(form, missing)) return;

  await whileBusy(submit, "Signing in…", async () => {
    try {
      await signIn(email, password);
      announce("Signed in.");
      window.location.assign("/account/");
    } catch (error) {
      if (error instanceof ApiError && error.code === "invalid_credentials") {
        showFieldErrors(form, { password: ["The email or password is incorrect."] });
        form.elements.password.select();
      } else if (error instanceof ApiError && error.code === "validation_failed") {
        showFieldErrors(form, error.errors);
      } else if (error instanceof ApiError && error.code === "email_unverified") {
        notice("#form-error", describeError(error), "error");
        unverified.hidden = false;
        resend.focus();
      } else {
        notice("#form-error", describeError(error), "error");
        submit.focus();
      }
    }
  });
});
