// The page a verification link opens: /verify/#token=... The token is taken out of the address
// bar first, then sent; a link that no longer works offers a new one.

import { ApiError, resendVerification, takeLinkToken, verifyEmail } from "./api.js";
import { $, clearFieldErrors, describeError, notice, showFieldErrors, whileBusy } from "./ui.js";

const result = $("#verify-result");
const form = $("#resend-form");
const submit = form.querySelector('button[type="submit"]');

function offerNewLink(text) {
  notice(result, text, "error");
  form.hidden = false;
}

const token = takeLinkToken();
if (!token) {
  offerNewLink("This page needs the link from your verification email.");
} else {
  verifyEmail(token)
    .then(() => {
      notice(result, "Your email address is verified. Thank you!", "ok");
      $("#verify-next").hidden = false;
    })
    .catch((error) => {
      if (error instanceof ApiError && error.code === "invalid_link") offerNewLink(describeError(error));
      else notice(result, describeError(error), "error");
    });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.getAttribute("aria-busy") === "true") return;
  clearFieldErrors(form);
  notice("#form-error", "");
  const email = form.elements.email.value.trim();
  if (showFieldErrors(form, email ? {} : { email: ["Enter your email address."] })) return;
  await whileBusy(submit, "Sending…", async () => {
    try {
      await resendVerification(email);
      notice(result, `If ${email} has an account waiting for verification, a new link is on its way.`, "ok");
      form.hidden = true;
    } catch (error) {
      notice("#form-error", describeError(error), "error");
    }
  });
});
