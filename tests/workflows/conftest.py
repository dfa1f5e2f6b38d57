import pytest

import pipeline_shape as shape


@pytest.fixture(scope="session")
def workflows():
    return shape.load_workflows()
