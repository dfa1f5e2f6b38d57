// Password reset. Without a token: ask for a link by email. With one (/reset/#token=..., taken
// out of the address bar at once): choose a new password, then sign in with it.

import { ApiError, confirmPasswordReset, leave, requestPasswordReset, signIn, takeLinkToken } from "./api.js";
import { $, announce, clearFieldErrors, describeError, notice, passwordLength, showFieldErrors, whileBusy, wireRevealButtons } from "./ui.js";

const requestForm = $("#request-form");
const confirmForm = $("#confirm-form");
wireRevealButtons(confirmForm);

const token = takeLinkToken();
if (token) {
  $("#reset-title").textContent = "Choose a new password";
  document.title = "Choose a new password · Latchkey";
  confirmForm.hidden = false;
} else {
  requestForm.hidden = false;
}

requestForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (requestForm.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(requestForm);
  notice("#request-error", "");
  const email = requestForm.elements.email.value.trim();
  if (showFieldErrors(requestForm, email ? {} : { email: ["Enter your email address."] })) return;
  const submit = requestForm.querySelector('button[type="submit"]');
  await whileBusy(submit, "Sending…", async () => {
    try {
      await requestPasswordReset(email);
      requestForm.hidden = true;
      $("#request-sent-address").textContent = email;
      $("#request-sent").hidden = false;
      $("#request-sent-title").focus();
    } catch (error) {
      notice("#request-error", describeError(error), "error");
    }
  });
});

confirmForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (confirmForm.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(confirmForm);
  notice("#confirm-error", "");
  const email = confirmForm.elements.email.value.trim();
  const password = confirmForm.elements.new_password.value;
  const problems = {};
  if (!email) problems.email = ["Enter your email address."];
  if (!password) problems.new_password = ["Choose a new password."];
  else if (passwordLength(password) < 8) problems.new_password = ["Use at least 8 characters."];
  else if (passwordLength(password) > 256) problems.new_password = ["Use at most 256 characters."];
  if (showFieldErrors(confirmForm, problems)) return;
  const submit = confirmForm.querySelector('button[type="submit"]');
  await whileBusy(submit, "Saving…", async () => {
    try {
      await confirmPasswordReset(token, password);
    } catch (error) {
      if (error instanceof ApiError && error.code === "validation_failed") {
        showFieldErrors(confirmForm, error.errors);
      } else if (error instanceof ApiError && error.code === "invalid_link") {
        confirmForm.hidden = true;
        requestForm.hidden = false;
        notice("#request-error", `${describeError(error)} Ask for a new one here.`, "error");
      } else {
        notice("#confirm-error", describeError(error), "error");
      }
      return;
    }
    announce("Your password is changed.");
    try {
      await signIn(email, password);
      leave("/account/", "Your password is changed, and every other session is signed out.", "ok");
    } catch {
      // Another address than the account's, or verification pending: sign in by hand.
      leave("/", "Your password is changed. Sign in with it.", "ok");
    }
  });
});
