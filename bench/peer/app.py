"""The peer `make bench` compares Latchkey with: fastapi-users 15 as its documentation sets it up
(SQLAlchemy on asyncpg, bearer transport, JWT strategy), on its own PostgreSQL.

    PEER_DATABASE_URL=postgresql+asyncpg://... uvicorn app:app --workers 2

Endpoints: POST /auth/register (JSON), POST /auth/jwt/login (form), GET /users/me. fastapi-users
has no refresh endpoint. Its JWT strategy checks a token by signature and reads the user (one
query); it keeps no sessions, so a token cannot be revoked before it expires.
"""

import os
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

DATABASE_URL = os.environ["PEER_DATABASE_URL"]
SECRET = os.environ.get("PEER_SECRET", "bench-only-secret-not-used-anywhere-else")
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "16"))


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


engine = create_async_engine(DATABASE_URL, pool_size=POOL_SIZE, max_overflow=0)
session_maker = async_sessionmaker(engine, expire_on_commit=False)


async def get_async_session():
    async with session_maker() as session:
        yield session


async def get_user_db(session: AsyncSession = Depends(get_async_session)):
    yield SQLAlchemyUserDatabase(session, User)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


async def get_user_manager(user_db: SQLAlchemyUserDatabase = Depends(get_user_db)):
    yield UserManager(user_db)


def get_jwt_strategy() -> JWTStrategy:
    return JWTStrategy(secret=SECRET, lifetime_seconds=900)


auth_backend = AuthenticationBackend(
    name="jwt",
    transport=BearerTransport(tokenUrl="auth/jwt/login"),
    get_strategy=get_jwt_strategy,
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])


@asynccontextmanager
async def lifespan(_app: FastAPI):
    # Two workers start together: the first creates the table, the second may race it.
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    except Exception:  # noqa: BLE001 - the other worker made it
        pass
    yield


app = FastAPI(lifespan=lifespan)
app.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")
app.include_router(fastapi_users.get_users_router(UserRead, schemas.BaseUserUpdate), prefix="/users")


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
