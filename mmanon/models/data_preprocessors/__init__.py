from .anonymizer_data_preprocessor import AnonymizerDataPreprocessor, FaceBatch

__all__ = ['AnonymizerDataPreprocessor', 'FaceBatch']
