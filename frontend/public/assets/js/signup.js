// The sign-up page. The server decides whether a password is strong enough (zxcvbn, with the
// email as a hint); its reasons and suggestions are shown under the field, in its words.

import { ApiError, signUp } from "./api.js";
import { $, announce, clearFieldErrors, describeError, el, notice, passwordLength, showFieldErrors, whileBusy, wireRevealButtons } from "./ui.js";

const form = $("#signup-form");
const submit = form.querySelector('button[type="submit"]');
wireRevealButtons(form);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(form);
  notice("#form-error", "");
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  const problems = {};
  if (!email) problems.email = ["Enter your email address."];
  else if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) problems.email = ["Enter an email address like name@example.com."];
  if (!password) problems.password = ["Choose a password."];
  else if (passwordLength(password) < 8) problems.password = ["Use at least 8 characters."];
  else if (passwordLength(password) > 256) problems.password = ["Use at most 256 characters."];
  if (showFieldErrors(form, problems)) return;

  await whileBusy(submit, "Creating account…", async () => {
    try {
      const user = await signUp(email, password);
      if (user) {
        announce("Account created.");
        window.location.assign("/account/");
        return;
      }
      // Verification required: the same answer whether the address was new or taken.
      form.hidden = true;
      $("#check-mail-address").textContent = email;
      $("#check-mail").hidden = false;
      $("#check-mail-title").focus();
    } catch (error) {
      if (error instanceof ApiError && error.code === "validation_failed") {
        showFieldErrors(form, error.errors);
      } else if (error instanceof ApiError && error.code === "email_taken") {
        showFieldErrors(form, { email: ["An account with this email already exists."] });
        const box = $("#email-error");
        box.append(el("p", {}, el("a", { href: "/", text: "Sign in instead" })));
      } else {
        notice("#form-error", describeError(error), "error");
        submit.focus();
      }
    }
  });
});
