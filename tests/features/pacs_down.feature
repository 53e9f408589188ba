Feature: The PACS is down
  As an ordering physician
  I want the hip fracture service to answer in time even when the image archive fails
  So that my order entry is never blocked and I know the AI could not read the images

  Scenario: The image archive accepts the connection but never answers
    Given the patient's radiograph lives on a PACS that has stopped answering
    When the EHR sends an order-select hook for a hip X-ray
    Then the EHR gets an answer within the hook deadline
    And the card honestly says the AI analysis is unavailable

  Scenario: The image archive refuses the service's credentials
    Given the patient's radiograph is on a PACS that refuses the service's credentials
    When the EHR sends an order-select hook for a hip X-ray
    Then the EHR gets an answer within the hook deadline
    And the card honestly says the AI analysis is unavailable
