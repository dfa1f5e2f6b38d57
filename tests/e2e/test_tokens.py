"""The access token's life in the page: from the cookie on load, renewed shortly before it
expires, one refresh at a time however many tabs are open. The page's clock is Playwright's
fake one, so fifteen minutes pass in a moment; the server keeps real time."""

from __future__ import annotations

from playwright.sync_api import expect

from pages import expect_account, sign_up, strong_password, unique_email


class RefreshWatch:
    """Counts POST /api/v1/auth/refresh requests of a context and the most that ran at once."""

    def __init__(self, context):
        self.count = 0
        self.running = 0
        self.most = 0
        self.statuses: list[int] = []
        context.on("request", self._start)
        context.on("requestfinished", self._end)
        context.on("requestfailed", self._end)

    @staticmethod
    def _is_refresh(request) -> bool:
        return request.method == "POST" and request.url.endswith("/api/v1/auth/refresh")

    def _start(self, request):
        if self._is_refresh(request):
            self.count += 1
            self.running += 1
            self.most = max(self.most, self.running)

    def _end(self, request):
        if self._is_refresh(request):
            self.running -= 1
            response = request.response()
            self.statuses.append(response.status if response else 0)


def wait_until(page, condition, timeout_ms: int = 5000) -> None:
    """Lets the page run (events reach Python while Playwright waits) until `condition` holds."""
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out waiting")


def test_a_reload_gets_a_new_access_token_through_the_cookie(browsers):
    email = unique_email("reload")
    page = browsers.page()
    watch = RefreshWatch(page.context)
    sign_up(page, email, strong_password())
    before = watch.count
    page.reload()
    expect_account(page, email)
    assert watch.count == before + 1
    assert set(watch.statuses) == {200}


def test_the_page_refreshes_shortly_before_the_access_token_expires(browsers):
    email = unique_email("expiry")
    context = browsers.context()
    context.clock.install()
    watch = RefreshWatch(context)
    page = context.new_page()
    browsers.watch(page)
    sign_up(page, email, strong_password())
    expect(page.locator("#events > li[data-event]").first).to_be_visible()
    settled = watch.count

    context.clock.fast_forward("13:00")
    page.wait_for_timeout(300)
    assert watch.count == settled, "nothing to do with two minutes left"

    context.clock.fast_forward("01:10")  # past 60 s before the 900 s token expires
    wait_until(page, lambda: watch.count > settled and watch.running == 0)
    page.wait_for_timeout(300)
    assert watch.count == settled + 1
    assert watch.statuses[-1] == 200
    # The new token works: the lists reload without a trip to the sign-in page.
    page.get_by_role("button", name="Refresh the security activity").click()
    expect(page.get_by_role("button", name="Refresh the security activity")).to_be_enabled()
    expect_account(page, email)


def test_several_tabs_refresh_one_at_a_time_and_share_the_result(browsers):
    email = unique_email("tabs")
    context = browsers.context()
    context.clock.install()
    watch = RefreshWatch(context)
    tabs = [context.new_page() for _ in range(3)]
    for tab in tabs:
        browsers.watch(tab)
    sign_up(tabs[0], email, strong_password())
    # The other two open the account page at the same moment.
    for tab in tabs[1:]:
        tab.goto("/account/", wait_until="commit")
    for tab in tabs:
        expect_account(tab, email)
        expect(tab.locator("#events > li[data-event]").first).to_be_visible()
    assert watch.most == 1, "refreshes never overlap"
    settled = watch.count

    context.clock.fast_forward("14:10")
    wait_until(tabs[0], lambda: watch.count > settled and watch.running == 0)
    tabs[0].wait_for_timeout(500)
    assert watch.most == 1, "refreshes never overlap"
    assert watch.count == settled + 1, "one tab refreshed; the others took its token"
    assert set(watch.statuses) == {200}
    for tab in tabs:
        tab.get_by_role("button", name="Refresh the security activity").click()
    for tab in tabs:
        expect(tab.get_by_role("button", name="Refresh the security activity")).to_be_enabled()
        expect_account(tab, email)
    assert watch.count == settled + 1, "the shared token is used as it is"
