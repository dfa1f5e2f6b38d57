//! template.yaml, the SSM document in it, the host script and this crate must agree: on the
//! image pattern, on the script's path, on the event's keys and on the settings' names.

use deploy::config::IMAGE_PATTERN;

fn read(relative: &str) -> Option<String> {
    std::fs::read_to_string(format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"))).ok()
}

fn template() -> String {
    read("template.yaml").expect("template.yaml at the top of the repository")
}

#[test]
fn the_documents_allowed_pattern_is_the_lambdas_image_pattern() {
    let template = template();
    let patterns: Vec<&str> = template
        .lines()
        .filter_map(|line| line.trim().strip_prefix("allowedPattern: "))
        .collect();
    // The back-end's document and the front-end's.
    assert_eq!(
        patterns,
        [format!("'{IMAGE_PATTERN}'"), format!("'{IMAGE_PATTERN}'")]
    );
}

#[test]
fn the_host_script_checks_the_same_pattern_and_lives_where_the_document_calls_it() {
    let Some(script) = read("api-container/deploy/latchkey-deploy") else {
        eprintln!("api-container/deploy/latchkey-deploy is not in this checkout: not compared");
        return;
    };
    let image_re = script
        .lines()
        .find_map(|line| line.strip_prefix("readonly IMAGE_RE="))
        .expect("the host script's IMAGE_RE");
    assert_eq!(image_re, format!("'{IMAGE_PATTERN}'"));
    assert!(script.contains("/usr/local/sbin/latchkey-deploy"));
    assert!(script.contains("latchkey-deploy deploy REGISTRY/REPOSITORY@sha256:DIGEST"));
    assert!(
        template().contains("- exec /usr/local/sbin/latchkey-deploy deploy '{{ image }}'"),
        "the document runs the installed script with the image as its one argument"
    );
}

#[test]
fn the_front_end_script_checks_the_same_pattern_and_its_document_calls_it() {
    let script = read("frontend/deploy/latchkey-frontend-deploy")
        .expect("frontend/deploy/latchkey-frontend-deploy");
    let image_re = script
        .lines()
        .find_map(|line| line.strip_prefix("readonly IMAGE_RE="))
        .expect("the front-end script's IMAGE_RE");
    assert_eq!(image_re, format!("'{IMAGE_PATTERN}'"));
    assert!(
        template().contains("- exec /usr/local/sbin/latchkey-frontend-deploy deploy '{{ image }}'"),
        "the front-end document runs the installed script with the image as its one argument"
    );
    let bootstrap = read("infra/host/bootstrap.sh").expect("infra/host/bootstrap.sh");
    assert!(bootstrap.contains("/usr/local/sbin/latchkey-frontend-deploy"));
}

#[test]
fn the_rule_matches_successful_pushes_with_kebab_case_keys() {
    let template = template();
    for line in [
        "source: [aws.ecr]",
        "detail-type: [ECR Image Action]",
        "action-type: [PUSH]",
        "result: [SUCCESS]",
        "repository-name: [!Ref RepositoryName, !Ref FrontendRepositoryName]",
        "image-tag: [{wildcard: !Ref ImageTagPattern}]",
        "MaximumRetryAttempts: 0",
    ] {
        assert!(
            template.lines().any(|l| l.trim() == line),
            "template.yaml lacks {line:?}"
        );
    }
}

#[test]
fn the_template_sets_every_setting_the_function_requires() {
    let template = template();
    for name in [
        "DEPLOY_REPOSITORY",
        "DEPLOY_REGISTRY",
        "DEPLOY_TAG_PATTERN",
        "DEPLOY_TARGET_TAG_KEY",
        "DEPLOY_TARGET_TAG_VALUE",
        "DEPLOY_DOCUMENT",
        "DEPLOY_FRONTEND_REPOSITORY",
        "DEPLOY_FRONTEND_DOCUMENT",
        "DEPLOY_FRONTEND_TARGET_TAG_VALUE",
        "DEPLOY_MAX_CONCURRENCY",
        "DEPLOY_MAX_ERRORS",
        "DEPLOY_DELIVERY_TIMEOUT_SECS",
        "DEPLOY_WAIT_TIMEOUT_SECS",
    ] {
        assert!(
            template.contains(&format!("          {name}: ")),
            "template.yaml does not set {name}"
        );
    }
}
