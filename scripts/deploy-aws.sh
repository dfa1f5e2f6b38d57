#!/usr/bin/env bash
# `make deploy-aws`: stands up (or updates) everything on AWS, in order, and can run any number
# of times (each step changes only what differs):
#   1. the environment stack (infra/environment.yaml): network, hosts, RDS, ECR, CloudFront,
#      GitHub's OIDC provider (when the account has none) and the release role;
#   2. the host bundle (api-container/deploy/, frontend/, infra/host/, RDS's CA bundle) to the
#      stack's bucket: the hosts wait for it at first boot; running hosts run their bootstrap
#      again through SSM: the front-end (nginx's main settings, CloudFront's ranges; the site
#      itself stays the newest front-end image, which arrives through EventBridge like the API's)
#      and the back-ends (api.env: with MAIL_DOMAIN, SMTP_URL and MAIL_FROM, from the mail secret;
#      the running container keeps its environment until the next release);
#   3. the SAM stack (template.yaml: deploy Lambda, EventBridge rule, SSM document), with the
#      environment's outputs as its parameters (with MAIL_DOMAIN: the mail secret, whose smtp_url
#      key this script derives from the sender's key first, infra/host/ses_smtp.py);
#   4. prints the GitHub variables to set and the https URL.
#
# Needs: AWS credentials (any the AWS CLI finds), the AWS CLI v2, curl; GITHUB_REPO=owner/name.
# Settings (environment): AWS_REGION, GITHUB_REPO, ENV_STACK (latchkey-env), APP_STACK (latchkey),
# BACKEND_COUNT (1), PRIVATE_EGRESS (nat | endpoints), MAIL_DOMAIN (unset: no SES resources),
# GITHUB_OWNER_ID and GITHUB_REPO_ID (looked up on GitHub's API when unset). The SAM CLI comes from scripts/requirements/lambda-tools.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "deploy-aws.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

command -v aws >/dev/null 2>&1 || die "the AWS CLI v2 is needed (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)"
command -v curl >/dev/null 2>&1 || die "curl is needed"
[ -n "${AWS_REGION:-${AWS_DEFAULT_REGION:-}}" ] || die "set AWS_REGION (e.g. AWS_REGION=eu-west-1 make deploy-aws)"
export AWS_REGION=${AWS_REGION:-$AWS_DEFAULT_REGION}
export AWS_DEFAULT_REGION=$AWS_REGION
if ! account=$(aws sts get-caller-identity --query Account --output text 2>/tmp/deploy-aws-sts.$$); then
  cat /tmp/deploy-aws-sts.$$ >&2
  rm -f /tmp/deploy-aws-sts.$$
  die "no usable AWS credentials: run 'aws configure' or 'aws sso login', or export AWS_PROFILE (docs/deploy.md, step 1)"
fi
rm -f /tmp/deploy-aws-sts.$$
[[ ${GITHUB_REPO:-} =~ ^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$ ]] || die "set GITHUB_REPO=owner/name (the repository whose master branch may release)"

env_stack=${ENV_STACK:-latchkey-env}
app_stack=${APP_STACK:-latchkey}
owner=${GITHUB_REPO%%/*}
repo=${GITHUB_REPO#*/}

# GitHub's immutable OIDC subject carries the numeric ids of the owner and the repository.
if [ -z "${GITHUB_OWNER_ID:-}" ] || [ -z "${GITHUB_REPO_ID:-}" ]; then
  say "looking up the ids of $GITHUB_REPO on GitHub"
  ids=$(curl -fsS "https://api.github.com/repos/$GITHUB_REPO" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["owner"]["id"], r["id"])') \
    || die "could not read https://api.github.com/repos/$GITHUB_REPO (a private repository: set GITHUB_OWNER_ID and GITHUB_REPO_ID, from 'gh api repos/$GITHUB_REPO --jq .owner.id,.id')"
  read -r GITHUB_OWNER_ID GITHUB_REPO_ID <<<"$ids"
fi

# One OIDC provider per account: create it only when there is none yet (or when this stack
# created it before, so that an update keeps it).
provider_arn="arn:aws:iam::$account:oidc-provider/token.actions.githubusercontent.com"
create_provider=true
if aws iam get-open-id-connect-provider --open-id-connect-provider-arn "$provider_arn" >/dev/null 2>&1; then
  ours=$(aws cloudformation describe-stack-resources --stack-name "$env_stack" --logical-resource-id GitHubOidcProvider \
    --query 'StackResources[0].PhysicalResourceId' --output text 2>/dev/null || true)
  [ "$ours" = "$provider_arn" ] || create_provider=false
fi

say "1/4 the environment stack $env_stack (infra/environment.yaml; the first run takes 15 to 25 minutes)"
aws cloudformation deploy --stack-name "$env_stack" --template-file infra/environment.yaml \
  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --parameter-overrides \
  "GitHubOwner=$owner" "GitHubRepo=$repo" "GitHubOwnerId=$GITHUB_OWNER_ID" "GitHubRepoId=$GITHUB_REPO_ID" \
  "CreateGitHubOidcProvider=$create_provider" "BackendCount=${BACKEND_COUNT:-1}" \
  "PrivateEgress=${PRIVATE_EGRESS:-nat}" "MailDomain=${MAIL_DOMAIN:-}"

output() {
  aws cloudformation describe-stacks --stack-name "$env_stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket=$(output ArtifactsBucketName)
repository=$(output RepositoryName)
frontend_repository=$(output FrontendRepositoryName)
tag_key=$(output BackendTagKey)
tag_value=$(output BackendTagValue)
frontend_tag=$(output FrontendTagValue)
url=$(output Url)
role_arn=$(output ReleaseRoleArn)
mail_secret=$(output MailSmtpSecretArn)
[ "$mail_secret" != None ] || mail_secret=""
mail_from=""
mail_secret_version=""
if [ -n "$mail_secret" ]; then
  mail_from="Latchkey <no-reply@${MAIL_DOMAIN:?MailSmtpSecretArn is an output: set MAIL_DOMAIN as before}>"
  # The SES SMTP password, derived from the sender's key, into the secret's smtp_url (template.yaml's
  # auth Lambda reads it there); written again only when it differs (a new key, say).
  secret=$(aws secretsmanager get-secret-value --secret-id "$mail_secret" --query SecretString --output text)
  updated=$(printf '%s' "$secret" | python3 -c '
import json, sys
sys.path.insert(0, "infra/host")
import ses_smtp
secret = json.load(sys.stdin)
url = ses_smtp.smtp_url(secret, sys.argv[1])
if secret.get("smtp_url") != url:
    print(json.dumps({**secret, "smtp_url": url}))
' "$AWS_REGION")
  if [ -n "$updated" ]; then
    aws secretsmanager put-secret-value --secret-id "$mail_secret" --secret-string "$updated" >/dev/null
    echo "wrote smtp_url (SES SMTP, derived from the sender's key) into $mail_secret"
  fi
  unset secret updated
  # The version now current: CloudFormation resolves a dynamic reference only when the template
  # or a parameter changes, so naming the version makes a new smtp_url reach the auth Lambda.
  mail_secret_version=$(aws secretsmanager describe-secret --secret-id "$mail_secret" \
    --query 'VersionIdsToStages' --output json | python3 -c '
import json, sys
print(next(v for v, stages in json.load(sys.stdin).items() if "AWSCURRENT" in stages))')
fi

say "2/4 the host bundle to s3://$bucket/host/bundle.tar.gz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsS "https://truststore.pki.rds.amazonaws.com/$AWS_REGION/$AWS_REGION-bundle.pem" -o "$work/rds-ca.pem" \
  || die "could not fetch RDS's CA bundle for $AWS_REGION"
# What git tracks, nothing else (no local settings, no build output).
mapfile -t files < <(git ls-files api-container/deploy frontend/public frontend/nginx.conf frontend/deploy infra/host)
tar -czf "$work/bundle.tar.gz" -C "$work" rds-ca.pem -C "$PWD" "${files[@]}"
aws s3 cp --only-show-errors "$work/bundle.tar.gz" "s3://$bucket/host/bundle.tar.gz"
# Running hosts take the new bundle now (a new host takes it at boot) and run their bootstrap
# again with the arguments their user data gave them (--saved); the back-ends also with the mail
# settings, so that a MailDomain given after they booted reaches them too.
update_hosts() { # TAG-VALUE COMMENT BOOTSTRAP-ARGUMENTS...
  local tag=$1 comment=$2 parameters command_id
  shift 2
  parameters=$(python3 -c '
import json, shlex, sys
bucket, args = sys.argv[1], sys.argv[2:]
print(json.dumps({"commands": [
    "set -e",
    f"aws s3 cp s3://{bucket}/host/bundle.tar.gz /root/latchkey-bundle.tar.gz",
    "rm -rf /opt/latchkey.new && mkdir /opt/latchkey.new && tar -xzf /root/latchkey-bundle.tar.gz -C /opt/latchkey.new",
    "rm -rf /opt/latchkey && mv /opt/latchkey.new /opt/latchkey",
    shlex.join(["/opt/latchkey/infra/host/bootstrap.sh", *args]),
]}))' "$bucket" "$@")
  command_id=$(aws ssm send-command --document-name AWS-RunShellScript \
    --targets "Key=tag:$tag_key,Values=$tag" --max-concurrency 1 --max-errors 0 \
    --comment "$comment" --parameters "$parameters" \
    --query Command.CommandId --output text) || die "$comment: SSM refused the command (above)"
  # One host at a time, stopping at the first failure: wait for the roll to end and say how each
  # host ended, so that a host left on its old settings is not mistaken for an updated one.
  local status=Pending targets
  for _ in $(seq 1 180); do
    read -r status targets < <(aws ssm list-commands --command-id "$command_id" \
      --query 'Commands[0].[Status,TargetCount]' --output text)
    case $status in Pending | InProgress | Cancelling) sleep 5 ;; *) break ;; esac
  done
  if [ "${targets:-0}" = 0 ]; then
    echo "$comment: no running host has the tag yet (a host still booting takes the bundle itself)"
    return 0
  fi
  aws ssm list-command-invocations --command-id "$command_id" \
    --query 'CommandInvocations[].[InstanceId,Status]' --output text \
    | while read -r host_status; do echo "  $comment: $host_status"; done
  [ "$status" = Success ] || die "$comment: $status; each host's output: aws ssm list-command-invocations --command-id $command_id --details"
}
update_hosts "$frontend_tag" "latchkey: update the front-end from the host bundle" frontend --saved
if [ -n "$mail_secret" ]; then
  update_hosts "$tag_value" "latchkey: update the back-ends' settings" backend --saved \
    --mail-secret "$mail_secret" --mail-from "$mail_from"
else
  update_hosts "$tag_value" "latchkey: update the back-ends' settings" backend --saved
fi

say "3/4 the SAM stack $app_stack (template.yaml) with the environment's outputs"
lambda_tools=${LATCHKEY_LAMBDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/lambda-tools}
if ! command -v sam >/dev/null 2>&1; then
  if [ ! -x "$lambda_tools/bin/sam" ]; then
    python3 -m venv "$lambda_tools"
    "$lambda_tools/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements/lambda-tools.txt
  fi
  export PATH="$lambda_tools/bin:$PATH"
fi
export SAM_CLI_TELEMETRY=0
sam build
sam deploy --stack-name "$app_stack" --region "$AWS_REGION" --no-confirm-changeset \
  --no-fail-on-empty-changeset --capabilities CAPABILITY_IAM --resolve-s3 \
  --parameter-overrides "RepositoryName=$repository" "BackendTagKey=$tag_key" "BackendTagValue=$tag_value" \
  "FrontendRepositoryName=$frontend_repository" "FrontendTagValue=$frontend_tag" \
  "MailSmtpSecretArn=$mail_secret" "MailSecretVersionId=$mail_secret_version" "MailFrom=$mail_from"

say "4/4 done"
cat <<EOF
The site and API: $url   (the first start of the hosts takes a few minutes more)

GitHub, once (Settings > Secrets and variables > Actions > Variables), or with gh:
  gh variable set AWS_ROLE_ARN   --repo $GITHUB_REPO --body $role_arn
  gh variable set AWS_REGION     --repo $GITHUB_REPO --body $AWS_REGION
  gh variable set ECR_REPOSITORY --repo $GITHUB_REPO --body $repository
  gh variable set ECR_FRONTEND_REPOSITORY --repo $GITHUB_REPO --body $frontend_repository
EOF
